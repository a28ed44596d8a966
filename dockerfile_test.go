package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"path"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode"

	"github.com/alecthomas/kong"

	"github.com/ipa-serving/ipa/orchestrator/kube"
)

// No Docker engine runs here: these tests read the Dockerfile and hold it
// to the Makefile, scripts/deps.sh, go.mod and the code.

// dockerInstr is one instruction of a Dockerfile, continuation lines joined.
type dockerInstr struct {
	Line  int               // where it starts (1-based)
	Cmd   string            // upper case: FROM, RUN, COPY…
	Flags map[string]string // leading --name=value flags (COPY --from=build)
	Args  string            // the rest
}

// dockerStage is the instructions from one FROM to the next.
type dockerStage struct {
	Image, Name string
	Instr       []dockerInstr
}

// parseDockerfile splits a Dockerfile into instructions: comment lines are
// dropped (also inside a continuation, as BuildKit does), a line ending in a
// backslash continues on the next, and an instruction's leading --flags are
// separated from its arguments. Heredocs and another escape character are
// refused rather than misread.
func parseDockerfile(src string) ([]dockerInstr, error) {
	var out []dockerInstr
	var cur *dockerInstr
	var text strings.Builder
	for i, line := range strings.Split(src, "\n") {
		n := i + 1
		line = strings.TrimRight(line, " \t\r")
		trimmed := strings.TrimLeftFunc(line, unicode.IsSpace)
		if strings.HasPrefix(trimmed, "#") {
			if cur == nil && regexp.MustCompile(`^#\s*escape\s*=`).MatchString(trimmed) && len(out) == 0 {
				return nil, fmt.Errorf("line %d: the escape directive is not supported", n)
			}
			continue
		}
		if trimmed == "" { // also inside a continuation, as Docker does
			continue
		}
		if cur == nil {
			cur = &dockerInstr{Line: n}
			text.Reset()
		}
		cont := strings.HasSuffix(line, `\`)
		if cont {
			line = strings.TrimSuffix(line, `\`)
		}
		if text.Len() > 0 {
			text.WriteByte(' ')
		}
		text.WriteString(strings.TrimSpace(line))
		if cont {
			continue
		}
		cmd, rest, _ := strings.Cut(text.String(), " ")
		cur.Cmd = strings.ToUpper(cmd)
		if !regexp.MustCompile(`^[A-Z]+$`).MatchString(cur.Cmd) {
			return nil, fmt.Errorf("line %d: %q is not an instruction", cur.Line, cmd)
		}
		rest = strings.TrimSpace(rest)
		cur.Flags = map[string]string{}
		for strings.HasPrefix(rest, "--") {
			flag, after, _ := strings.Cut(rest, " ")
			name, value, _ := strings.Cut(strings.TrimPrefix(flag, "--"), "=")
			cur.Flags[name] = value
			rest = strings.TrimSpace(after)
		}
		if strings.Contains(rest, "<<") && (cur.Cmd == "RUN" || cur.Cmd == "COPY") {
			return nil, fmt.Errorf("line %d: heredocs are not supported", cur.Line)
		}
		cur.Args = strings.Join(strings.Fields(rest), " ")
		out = append(out, *cur)
		cur = nil
	}
	if cur != nil {
		return nil, fmt.Errorf("line %d: the instruction continues past the end of the file", cur.Line)
	}
	return out, nil
}

// dockerStages groups instructions by FROM.
func dockerStages(instrs []dockerInstr) ([]dockerStage, error) {
	var stages []dockerStage
	for _, in := range instrs {
		if in.Cmd == "FROM" {
			f := strings.Fields(in.Args)
			st := dockerStage{Image: f[0]}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				st.Name = f[2]
			} else if len(f) != 1 {
				return nil, fmt.Errorf("line %d: FROM %s", in.Line, in.Args)
			}
			stages = append(stages, st)
			continue
		}
		if len(stages) == 0 {
			if in.Cmd == "ARG" {
				continue
			}
			return nil, fmt.Errorf("line %d: %s before the first FROM", in.Line, in.Cmd)
		}
		stages[len(stages)-1].Instr = append(stages[len(stages)-1].Instr, in)
	}
	return stages, nil
}

func (s dockerStage) all(cmd string) []dockerInstr {
	var out []dockerInstr
	for _, in := range s.Instr {
		if in.Cmd == cmd {
			out = append(out, in)
		}
	}
	return out
}

// workdir is the stage's last WORKDIR ("/" without one).
func (s dockerStage) workdir() string {
	wd := "/"
	for _, in := range s.all("WORKDIR") {
		wd = path.Join(wd, in.Args)
	}
	return wd
}

// execForm decodes an exec-form (JSON array) argument list.
func execForm(in dockerInstr) ([]string, error) {
	var v []string
	if !strings.HasPrefix(in.Args, "[") {
		return nil, fmt.Errorf("line %d: %s %s is in shell form; use the exec form [\"…\"]", in.Line, in.Cmd, in.Args)
	}
	if err := json.Unmarshal([]byte(in.Args), &v); err != nil {
		return nil, fmt.Errorf("line %d: %s: %v", in.Line, in.Cmd, err)
	}
	return v, nil
}

// envPairs decodes ENV NAME=value [NAME=value…] (and the legacy ENV NAME value).
func envPairs(in dockerInstr) map[string]string {
	m := map[string]string{}
	first, rest, _ := strings.Cut(in.Args, " ")
	if !strings.Contains(first, "=") {
		m[first] = rest
		return m
	}
	for _, kv := range strings.Fields(in.Args) {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = strings.Trim(v, `"'`)
	}
	return m
}

func TestDockerfileParserJoinsContinuationsAndDropsComments(t *testing.T) {
	src := "# syntax=docker/dockerfile:1\n" +
		"FROM golang:1.26 AS build\n" +
		"RUN apt-get update \\\n" +
		"    # a comment inside the continuation\n" +
		"    && apt-get install -y cmake \\\n" +
		"\t&& true\n" +
		"\n" +
		"copy --from=build --chown=1:1 /src/bin/ipa /usr/local/bin/\n" +
		"ENTRYPOINT [\"/usr/local/bin/ipa\"]\n"
	got, err := parseDockerfile(src)
	if err != nil {
		t.Fatal(err)
	}
	want := []dockerInstr{
		{Line: 2, Cmd: "FROM", Flags: map[string]string{}, Args: "golang:1.26 AS build"},
		{Line: 3, Cmd: "RUN", Flags: map[string]string{}, Args: "apt-get update && apt-get install -y cmake && true"},
		{Line: 8, Cmd: "COPY", Flags: map[string]string{"from": "build", "chown": "1:1"}, Args: "/src/bin/ipa /usr/local/bin/"},
		{Line: 9, Cmd: "ENTRYPOINT", Flags: map[string]string{}, Args: `["/usr/local/bin/ipa"]`},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("parsed\n%+v\nwant\n%+v", got, want)
	}
	for _, bad := range []string{"FROM x\nRUN a \\\n", "FROM x\nRUN <<EOF\nls\nEOF\n", "# escape=`\nFROM x\n", "FROM x\n[\"a\"]\n"} {
		if _, err := parseDockerfile(bad); err == nil {
			t.Errorf("%q parsed without an error", bad)
		}
	}
}

// makeRules holds the Makefile's variables (simple := ?= = assignments,
// $(CURDIR) as the repository root) and rules.
type makeRules struct {
	vars  map[string]string
	rules map[string][]string // target → prerequisites
	text  string
}

func parseMakeRules(text string) makeRules {
	mk := makeRules{vars: map[string]string{"CURDIR": "."}, rules: map[string][]string{}, text: text}
	assign := regexp.MustCompile(`^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*(?::=|\?=|=)\s*(.*)$`)
	rule := regexp.MustCompile(`^([^\s:=#][^:=]*?)\s*:(?:[^=]|$)(.*)$`)
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, "\t") || strings.HasPrefix(line, "#") {
			continue
		}
		if m := assign.FindStringSubmatch(line); m != nil {
			mk.vars[m[1]] = strings.TrimSpace(m[2])
			continue
		}
		if m := rule.FindStringSubmatch(line); m != nil {
			prereqs, _, _ := strings.Cut(m[2], "##")
			for _, target := range strings.Fields(m[1]) {
				mk.rules[target] = strings.Fields(prereqs)
			}
		}
	}
	return mk
}

// expand replaces $(VAR) by the Makefile's value, recursively.
func (mk makeRules) expand(s string) string {
	re := regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)
	for i := 0; i < 10 && re.MatchString(s); i++ {
		s = re.ReplaceAllStringFunc(s, func(v string) string { return mk.vars[v[2:len(v)-1]] })
	}
	return path.Clean(s)
}

// needs tells whether target depends on dep, directly or not.
func (mk makeRules) needs(target, dep string) bool {
	seen := map[string]bool{}
	var walk func(string) bool
	walk = func(t string) bool {
		if seen[t] {
			return false
		}
		seen[t] = true
		for _, p := range mk.rules[t] {
			if p == dep || walk(p) {
				return true
			}
		}
		return false
	}
	return walk(target)
}

// makeOutputs lists the paths (relative to the repository) that the Makefile
// and the deps script write: the Makefile's file targets and the outputs of
// its recipes (-o, --out), and the destinations under $DEPS of the script's
// mv, cp, ln and mkdir.
func makeOutputs(mk makeRules, script string) ([]string, error) {
	var out []string
	for target := range mk.rules {
		if strings.Contains(target, "/") {
			out = append(out, mk.expand(target))
		}
	}
	for _, m := range regexp.MustCompile(`(?m)^\t.*\s(?:-o|--out)\s+(\S+)`).FindAllStringSubmatch(mk.text, -1) {
		out = append(out, mk.expand(m[1]))
	}
	deps := mk.expand("$(DEPS)")
	m := regexp.MustCompile(`(?m)^DEPS=\$\{DEPS:-\$ROOT/([^}]+)\}`).FindStringSubmatch(script)
	if m == nil {
		return nil, fmt.Errorf("scripts/deps.sh does not set DEPS=${DEPS:-$ROOT/…}")
	}
	if path.Clean(m[1]) != deps {
		return nil, fmt.Errorf("scripts/deps.sh installs into %s, the Makefile reads %s", m[1], deps)
	}
	depsPath := regexp.MustCompile(`^"?\$\{?DEPS\}?/([^"\s]+)"?$`)
	for _, line := range strings.Split(script, "\n") {
		f := strings.Fields(line)
		for i, w := range f {
			if w != "mv" && w != "cp" && w != "ln" && w != "mkdir" {
				continue
			}
			args := f[i+1:]
			if j := slices.IndexFunc(args, func(a string) bool { return strings.HasPrefix(a, "&") || a == ";" || a == "|" || a == ")" }); j >= 0 {
				args = args[:j]
			}
			dests := args
			if w != "mkdir" && len(args) > 0 {
				dests = args[len(args)-1:]
			}
			for _, d := range dests {
				if m := depsPath.FindStringSubmatch(d); m != nil {
					out = append(out, path.Join(deps, m[1]))
				}
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// cliEnvNames lists the environment variables the binary reads through its
// flags (kong's env tags, anywhere in the command line).
func cliEnvNames() []string {
	var names []string
	seen := map[reflect.Type]bool{}
	var walk func(reflect.Type)
	walk = func(t reflect.Type) {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct || seen[t] {
			return
		}
		seen[t] = true
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if env, ok := f.Tag.Lookup("env"); ok {
				for _, e := range strings.Split(env, ",") {
					names = append(names, strings.TrimSpace(e))
				}
			}
			walk(f.Type)
		}
	}
	walk(reflect.TypeFor[CLI]())
	slices.Sort(names)
	return slices.Compact(names)
}

// goModVersion is go.mod's go line as numbers.
func goModVersion(gomod string) ([]int, error) {
	m := regexp.MustCompile(`(?m)^go (\d+)\.(\d+)(?:\.(\d+))?\s*$`).FindStringSubmatch(gomod)
	if m == nil {
		return nil, fmt.Errorf("go.mod has no go line")
	}
	return versionNumbers(m[1:]), nil
}

func versionNumbers(s []string) []int {
	var v []int
	for _, x := range s {
		if x != "" {
			n, _ := strconv.Atoi(x)
			v = append(v, n)
		}
	}
	return v
}

// parseIPAArgs parses args as ipa's command line (without running it).
func parseIPAArgs(args []string) error {
	var cli CLI
	exited := false
	p, err := kong.New(&cli, kong.Name("ipa"), cliVars(),
		kong.Exit(func(int) { exited = true }), kong.Writers(io.Discard, io.Discard))
	if err != nil {
		return err
	}
	if _, err := p.Parse(args); err != nil {
		return err
	}
	if exited {
		return fmt.Errorf("ipa exits at once (help?)")
	}
	return nil
}

// dockerFiles are the files the Dockerfile is checked against.
var dockerFiles = []string{"Dockerfile", "Makefile", "go.mod", "scripts/deps.sh"}

func readDockerFiles(t *testing.T) map[string]string {
	t.Helper()
	files := map[string]string{}
	for _, f := range dockerFiles {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		files[f] = string(b)
	}
	return files
}

// checkDockerfile returns what is wrong with files["Dockerfile"] given the
// other files of dockerFiles.
func checkDockerfile(files map[string]string) []string {
	var problems []string
	errorf := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	instrs, err := parseDockerfile(files["Dockerfile"])
	if err != nil {
		return []string{"Dockerfile: " + err.Error()}
	}
	stages, err := dockerStages(instrs)
	if err != nil {
		return []string{"Dockerfile: " + err.Error()}
	}
	mk := parseMakeRules(files["Makefile"])
	if len(stages) < 2 {
		return []string{fmt.Sprintf("%d stages: want a build stage and a runtime stage", len(stages))}
	}
	byName := map[string]int{}
	for i, s := range stages[:len(stages)-1] {
		if s.Name == "" {
			errorf("stage %d (FROM %s) has no name: COPY --from must name it", i, s.Image)
		}
		byName[s.Name] = i
	}

	// The Go image is go.mod's Go.
	want, err := goModVersion(files["go.mod"])
	if err != nil {
		return []string{err.Error()}
	}
	var goImages int
	for _, s := range stages {
		m := regexp.MustCompile(`^(?:docker\.io/(?:library/)?)?golang:(\d+)\.(\d+)(?:\.(\d+))?(?:-.*)?$`).FindStringSubmatch(s.Image)
		if m == nil {
			continue
		}
		goImages++
		got := versionNumbers(m[1:])
		if got[0] != want[0] || got[1] != want[1] || (len(got) == 3 && len(want) == 3 && got[2] < want[2]) {
			errorf("FROM %s: go.mod says go %v", s.Image, want)
		}
	}
	if goImages == 0 {
		errorf("no stage is FROM golang:<go.mod's version>")
	}

	// The build runs make targets that exist, and they make the native
	// dependencies, the binary and the model repository.
	var targets []string
	for _, s := range stages[:len(stages)-1] {
		for _, in := range s.all("RUN") {
			for _, cmd := range regexp.MustCompile(`&&|;|\|\|`).Split(in.Args, -1) {
				f := strings.Fields(cmd)
				if len(f) == 0 || f[0] != "make" {
					continue
				}
				for _, a := range f[1:] {
					if strings.HasPrefix(a, "-") || strings.Contains(a, "=") {
						continue
					}
					if _, ok := mk.rules[a]; !ok {
						errorf("line %d: make %s: the Makefile has no target %q", in.Line, a, a)
					}
					targets = append(targets, a)
				}
			}
		}
	}
	for _, what := range []string{"deps", "bin/ipa"} {
		if !slices.ContainsFunc(targets, func(tg string) bool { return tg == what || mk.needs(tg, what) }) {
			errorf("the build runs make %v, which does not make %s", targets, what)
		}
	}
	if !slices.Contains(targets, "models") {
		errorf("the build runs make %v, not make models (the model repository)", targets)
	}

	// The runtime stage takes only what the build produced.
	final := stages[len(stages)-1]
	if strings.HasPrefix(final.Image, "golang") {
		errorf("the runtime stage is FROM %s: a Go toolchain is not needed to run", final.Image)
	}
	made, err := makeOutputs(mk, files["scripts/deps.sh"])
	if err != nil {
		return append(problems, err.Error())
	}
	dest := map[string]string{} // produced path → where the image has it
	for _, in := range final.all("COPY") {
		from, ok := in.Flags["from"]
		if !ok {
			errorf("line %d: COPY %s from the build context into the runtime image", in.Line, in.Args)
			continue
		}
		i, ok := byName[from]
		if !ok {
			errorf("line %d: COPY --from=%s: no earlier stage is called so", in.Line, from)
			continue
		}
		f := strings.Fields(in.Args)
		if len(f) != 2 {
			errorf("line %d: COPY %s: want one source and one destination", in.Line, in.Args)
			continue
		}
		wd := stages[i].workdir()
		rel, ok := strings.CutPrefix(path.Clean(f[0]), wd+"/")
		if !ok || !slices.Contains(made, rel) {
			errorf("line %d: COPY --from=%s %s: the Makefile and scripts/deps.sh make %v under %s, not that", in.Line, from, f[0], made, wd)
			continue
		}
		to := f[1]
		if strings.HasSuffix(to, "/") {
			to = path.Join(to, path.Base(rel))
		}
		dest[rel] = path.Clean(to)
	}
	ortLib, modelsDir := mk.expand("$(IPA_ORT_LIB)"), mk.expand("$(IPA_MODELS_DIR)")
	for _, need := range []string{"bin/ipa", ortLib, modelsDir} {
		if _, ok := dest[need]; !ok {
			errorf("the runtime image lacks %s (copies %v)", need, dest)
		}
	}

	// The environment names what the binary reads, and points where the
	// files are.
	read := cliEnvNames()
	for _, must := range []string{"IPA_MODELS_DIR", "IPA_ORT_LIB"} {
		if !slices.Contains(read, must) {
			errorf("the binary no longer reads %s (reads %v): update the Dockerfile and this test", must, read)
		}
	}
	env := map[string]string{}
	for _, in := range final.all("ENV") {
		for k, v := range envPairs(in) {
			if !slices.Contains(read, k) {
				errorf("line %d: ENV %s: the binary reads none such (it reads %v)", in.Line, k, read)
			}
			env[k] = v
		}
	}
	if env["IPA_MODELS_DIR"] != dest[modelsDir] || env["IPA_MODELS_DIR"] != kube.ModelsDir {
		errorf("IPA_MODELS_DIR=%q; the models are copied to %q and the manifests expect %q", env["IPA_MODELS_DIR"], dest[modelsDir], kube.ModelsDir)
	}
	if env["IPA_ORT_LIB"] != dest[ortLib] {
		errorf("IPA_ORT_LIB=%q; ONNX Runtime is copied to %q", env["IPA_ORT_LIB"], dest[ortLib])
	}

	// Not root, numerically (runAsNonRoot cannot check a user name), and
	// the uid the manifests run as.
	users := final.all("USER")
	if len(users) == 0 {
		errorf("the runtime image runs as root: no USER")
	} else {
		u := users[len(users)-1].Args
		uid, gid, _ := strings.Cut(u, ":")
		if n, err := strconv.Atoi(uid); err != nil || n == 0 {
			errorf("USER %s: want a numeric non-root uid", u)
		} else if n != kube.RunAsUser {
			errorf("USER %s; the manifests run as %d", u, kube.RunAsUser)
		}
		if g, err := strconv.Atoi(gid); gid != "" && (err != nil || g == 0) {
			errorf("USER %s: want a numeric non-root gid", u)
		}
	}

	// ENTRYPOINT is the binary, so that the manifests' args are its
	// commands; CMD is a command line the binary accepts.
	if eps := final.all("ENTRYPOINT"); len(eps) == 0 {
		errorf("no ENTRYPOINT")
	} else if ep, err := execForm(eps[len(eps)-1]); err != nil {
		errorf("%v", err)
	} else if len(ep) != 1 || ep[0] != dest["bin/ipa"] {
		errorf("ENTRYPOINT %q; the binary is at %q", ep, dest["bin/ipa"])
	}
	if cmds := final.all("CMD"); len(cmds) > 0 {
		args, err := execForm(cmds[len(cmds)-1])
		if err != nil {
			errorf("%v", err)
		} else if err := parseIPAArgs(args); err != nil {
			errorf("CMD %q: %v", args, err)
		} else if i := slices.Index(args, "--http.listen-addr"); i < 0 || !strings.HasPrefix(args[i+1], "0.0.0.0:") {
			errorf("CMD %q listens on loopback only: unreachable from outside the container", args)
		}
	}
	for _, in := range final.all("EXPOSE") {
		if in.Args != strconv.Itoa(kube.Port) && in.Args != strconv.Itoa(kube.Port)+"/tcp" {
			errorf("EXPOSE %s; the roles serve on %d", in.Args, kube.Port)
		}
	}
	return problems
}

func TestDockerfileBuildsWhatTheMakefileBuilds(t *testing.T) {
	for _, p := range checkDockerfile(readDockerFiles(t)) {
		t.Error(p)
	}
}

// Each mutation of the Dockerfile must fail a check.
func TestDockerfileChecksCatchMistakes(t *testing.T) {
	files := readDockerFiles(t)
	good := files["Dockerfile"]
	for _, tc := range []struct{ name, old, new string }{
		{"root user", "USER 65532:65532", "USER 0"},
		{"user name", "USER 65532:65532", "USER nonroot"},
		{"no user", "USER 65532:65532", ""},
		{"unknown make target", "RUN make models", "RUN make image"},
		{"no make models", "RUN make models", "RUN make build"},
		{"old Go", "golang:1.26-bookworm", "golang:1.25-bookworm"},
		{"source not built", "/src/bin/ipa /usr/local/bin/ipa", "/src/bin/ipa-server /usr/local/bin/ipa"},
		{"source from the context", "COPY --from=build /src/.deps/models /models", "COPY .deps/models /models"},
		{"models elsewhere", "/src/.deps/models /models", "/src/.deps/models /srv/models"},
		{"env not read", "IPA_MODELS_DIR=/models", "MODELS_DIR=/models"},
		{"library path wrong", "IPA_ORT_LIB=/usr/local/lib/libonnxruntime.so.1", "IPA_ORT_LIB=/usr/lib/libonnxruntime.so.1"},
		{"entrypoint elsewhere", `ENTRYPOINT ["/usr/local/bin/ipa"]`, `ENTRYPOINT ["/bin/sh", "-c"]`},
		{"entrypoint shell form", `ENTRYPOINT ["/usr/local/bin/ipa"]`, `ENTRYPOINT /usr/local/bin/ipa`},
		{"unknown command", `CMD ["local",`, `CMD ["serve",`},
		{"unnamed build stage", " AS build", ""},
		{"single stage", "FROM debian:bookworm-slim AS runtime\n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(good, tc.old) {
				t.Fatalf("the Dockerfile has no %q to break", tc.old)
			}
			mutant := maps.Clone(files)
			mutant["Dockerfile"] = strings.Replace(good, tc.old, tc.new, 1)
			if problems := checkDockerfile(mutant); len(problems) == 0 {
				t.Errorf("the checks pass a Dockerfile with %s", tc.name)
			} else {
				t.Logf("caught: %s", problems[0])
			}
		})
	}
	// And a Makefile that lost its target fails the good Dockerfile.
	mutant := maps.Clone(files)
	mutant["Makefile"] = strings.Replace(files["Makefile"], "\nmodels:", "\nrepository:", 1)
	if len(checkDockerfile(mutant)) == 0 {
		t.Error("the checks pass although the Makefile has no models target")
	}
}

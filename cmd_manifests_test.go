package main

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/alecthomas/kong"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/ipa-serving/ipa/models/pipespec"
	"github.com/ipa-serving/ipa/orchestrator/kube"
	"github.com/ipa-serving/ipa/profiles"
)

const classifyProfile = "profiles/measured/classify.json"

// parseCLI parses args as main does and returns the context to run.
func parseCLI(t *testing.T, cli *CLI, args ...string) (*kong.Context, error) {
	t.Helper()
	p, err := kong.New(cli, kong.Name("ipa"), cliVars(),
		kong.Exit(func(int) { t.Fatal("kong wanted to exit") }))
	if err != nil {
		t.Fatal(err)
	}
	return p.Parse(args)
}

// runCLI runs the command line args in this process.
func runCLI(t *testing.T, args ...string) error {
	t.Helper()
	var cli CLI
	kctx, err := parseCLI(t, &cli, args...)
	if err != nil {
		return err
	}
	return kctx.Run(&cli.Globals)
}

// decodeManifests decodes each document of a multi-document stream into
// its typed object, refusing unknown fields.
func decodeManifests(t *testing.T, b []byte) map[string]any {
	t.Helper()
	objs := map[string]any{}
	docs := strings.Split(string(b), "\n---\n")
	docs[0] = strings.TrimPrefix(docs[0], "---\n")
	for i, doc := range docs {
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
			t.Fatalf("document %d: %v\n%s", i, err, doc)
		}
		var obj any
		switch tm.APIVersion + " " + tm.Kind {
		case "v1 ConfigMap":
			obj = &corev1.ConfigMap{}
		case "v1 Secret":
			obj = &corev1.Secret{}
		case "v1 ServiceAccount":
			obj = &corev1.ServiceAccount{}
		case "v1 Service":
			obj = &corev1.Service{}
		case "apps/v1 Deployment":
			obj = &appsv1.Deployment{}
		case "rbac.authorization.k8s.io/v1 Role":
			obj = &rbacv1.Role{}
		case "rbac.authorization.k8s.io/v1 RoleBinding":
			obj = &rbacv1.RoleBinding{}
		case "networking.k8s.io/v1 NetworkPolicy":
			obj = &networkingv1.NetworkPolicy{}
		case "policy/v1 PodDisruptionBudget":
			obj = &policyv1.PodDisruptionBudget{}
		default:
			t.Fatalf("document %d is a %q %q\n%s", i, tm.APIVersion, tm.Kind, doc)
		}
		if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
			t.Fatalf("document %d (%s): %v\n%s", i, tm.Kind, err, doc)
		}
		name := obj.(metav1.Object).GetName()
		if ns := obj.(metav1.Object).GetNamespace(); ns != "ml" {
			t.Errorf("%s/%s in namespace %q", tm.Kind, name, ns)
		}
		objs[tm.Kind+"/"+name] = obj
	}
	return objs
}

func TestManifestsCommandRendersTheClassifyPipeline(t *testing.T) {
	out := filepath.Join(t.TempDir(), "classify.yaml")
	tokenFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tokenFile, []byte("0123456789abcdef0123456789abcdef\n"), 0o600)
	err := runCLI(t, "manifests", "--pipeline", "classify", "--models.dir", modelsDir(t), "--profile", classifyProfile,
		"--namespace", "ml", "--stage-memory", "classify=2Gi", "--image", "registry.local/ipa:v1", "--admin-token-file", tokenFile, "--out", out)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	objs := decodeManifests(t, b)
	var got []string
	for k := range objs {
		got = append(got, k)
	}
	slices.Sort(got)
	want := []string{"ConfigMap/classify-pipeline", "Deployment/classify-classify", "Deployment/classify-controller",
		"Deployment/classify-router", "NetworkPolicy/classify-stages", "PodDisruptionBudget/classify-classify", "PodDisruptionBudget/classify-router",
		"Role/classify-controller", "Role/classify-router", "RoleBinding/classify-controller",
		"RoleBinding/classify-router", "Secret/classify-admin-token", "Service/classify-classify", "Service/classify-router",
		"ServiceAccount/classify-controller", "ServiceAccount/classify-router"}
	if !slices.Equal(got, want) {
		t.Fatalf("objects\n got %v\nwant %v", got, want)
	}

	d := objs["Deployment/classify-classify"].(*appsv1.Deployment)
	c := d.Spec.Template.Spec.Containers[0]
	for _, pair := range [][2]string{{"--stage", "classify"}, {"--variant", "squeezenet"}, {"--replicas", "1"}, {"--cores", "1"},
		{"--batch.max-batch", "4"}, {"--batch.max-wait", "2ms"}, {"--admin.await-config", "30s"}, {"--models.dir", "/models"}} {
		i := slices.Index(c.Args, pair[0])
		if i < 0 || i+1 >= len(c.Args) || c.Args[i+1] != pair[1] {
			t.Errorf("stage args %q lack %s %s", c.Args, pair[0], pair[1])
		}
	}
	// Every role's args are an ipa command line this binary accepts.
	for _, name := range []string{"Deployment/classify-classify", "Deployment/classify-router", "Deployment/classify-controller"} {
		args := objs[name].(*appsv1.Deployment).Spec.Template.Spec.Containers[0].Args
		var cli CLI
		if _, err := parseCLI(t, &cli, args...); err != nil {
			t.Errorf("%s: args %q do not parse: %v", name, args, err)
		}
	}
	if mem := c.Resources.Requests[corev1.ResourceMemory]; mem.Cmp(resource.MustParse("2Gi")) != 0 {
		t.Errorf("memory request %s, want the --stage-memory 2Gi", mem.String())
	}
	if c.Image != "registry.local/ipa:v1" {
		t.Errorf("image %q", c.Image)
	}
	cm := objs["ConfigMap/classify-pipeline"].(*corev1.ConfigMap)
	src, _ := pipespec.Builtin("classify")
	prof, _ := os.ReadFile(classifyProfile)
	if cm.Data[kube.PipelineKey] != string(src) || cm.Data[kube.ProfileKey] != string(prof) {
		t.Errorf("the ConfigMap does not hold the spec and the profile as given")
	}
	if tok := objs["Secret/classify-admin-token"].(*corev1.Secret).Data[kube.TokenKey]; string(tok) != "0123456789abcdef0123456789abcdef" {
		t.Errorf("admin token %q, want the file's (without its line break)", tok)
	}
}

// Without --stage-memory a stage pod requests what the memory model says
// one replica of its variants holds at the largest batch its profile
// measured, and is limited a little above; without a token nothing secret
// is rendered, and two renders are the same bytes.
func TestManifestsCommandSizesStagesByTheMemoryModel(t *testing.T) {
	render := func() []byte {
		out := filepath.Join(t.TempDir(), "classify.yaml")
		if err := runCLI(t, "manifests", "--pipeline", "classify", "--models.dir", modelsDir(t), "--profile", classifyProfile,
			"--namespace", "ml", "--out", out); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	a, b := render(), render()
	if !bytes.Equal(a, b) {
		t.Fatal("two renders of the same flags differ")
	}
	objs := decodeManifests(t, a)
	if _, ok := objs["Secret/classify-admin-token"]; ok {
		t.Error("a Secret is rendered without --admin-token-file")
	}
	res := objs["Deployment/classify-classify"].(*appsv1.Deployment).Spec.Template.Spec.Containers[0].Resources
	repo, err := RepoFlags{Dir: modelsDir(t)}.Open()
	if err != nil {
		t.Fatal(err)
	}
	meta, err := repo.Stage("classify")
	if err != nil {
		t.Fatal(err)
	}
	prof, err := loadProfile(classifyProfile)
	if err != nil {
		t.Fatal(err)
	}
	batch := 1
	for _, v := range meta.Variants {
		for _, c := range prof.Variant("classify", v.Name).Configs {
			batch = max(batch, slices.Max(c.Batches()))
		}
	}
	want := profiles.MeasuredMemory().Estimate("classify", variantFiles(modelsDir(t), meta), batch).Total(1)
	req, lim := res.Requests[corev1.ResourceMemory], res.Limits[corev1.ResourceMemory]
	if got := req.Value(); got < want || got >= want+1<<20 {
		t.Errorf("memory request %s (%d bytes), want the model's %d bytes rounded up to MiB", req.String(), got, want)
	}
	if wantLim := kube.StageMemoryLimit(req); lim.Cmp(wantLim) != 0 {
		t.Errorf("memory limit %s, want %s", lim.String(), wantLim.String())
	}
	t.Logf("classify: batch %d, request %s, limit %s", batch, req.String(), lim.String())
}

// A spec file goes into the ConfigMap verbatim, comments included.
func TestManifestsCommandKeepsASpecFileAsWritten(t *testing.T) {
	dir := t.TempDir()
	spec := filepath.Join(dir, "mine.yaml")
	text := "# my own\nname: mine\nsla: 2s\nstages:\n  - name: cls\n    model: classify\n    input: image-imagenet\n    initial: {variant: resnet50}\n"
	if err := os.WriteFile(spec, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out.yaml")
	if err := runCLI(t, "manifests", "--pipeline", spec, "--models.dir", modelsDir(t), "--profile", classifyProfile,
		"--namespace", "ml", "--admin-token-secret", "shared", "--await-config", "0s", "--out", out); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(out)
	objs := decodeManifests(t, b)
	if got := objs["ConfigMap/mine-pipeline"].(*corev1.ConfigMap).Data[kube.PipelineKey]; got != text {
		t.Errorf("pipeline.yaml %q, want the file %q", got, text)
	}
	if _, ok := objs["Secret/mine-admin-token"]; ok {
		t.Error("a Secret is rendered although --admin-token-secret names one")
	}
	args := objs["Deployment/mine-cls"].(*appsv1.Deployment).Spec.Template.Spec.Containers[0].Args
	if i := slices.Index(args, "--admin.await-config"); i < 0 || args[i+1] != "0s" {
		t.Errorf("--await-config 0s rendered as %q, want --admin.await-config 0s", args)
	}
	// Defaults the spec left out are filled from the repository.
	if i := slices.Index(args, "--batch.max-batch"); i < 0 || args[i+1] != "1" {
		t.Errorf("args %q", args)
	}
}

func TestManifestsCommandErrorsSayWhatToFix(t *testing.T) {
	dir := t.TempDir()
	writeSpec := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	oneStep := func(pipeline, step string) string {
		return "name: " + pipeline + "\nsla: 1s\nstages:\n  - name: " + step + "\n    model: classify\n    input: image-imagenet\n"
	}
	models := modelsDir(t)
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"no profile", []string{"--pipeline", "classify"}, []string{"needs --profile FILE", "ipa profile"}},
		{"profile missing", []string{"--pipeline", "classify", "--profile", filepath.Join(dir, "nope.json")}, []string{"nope.json"}},
		{"profile lacks a stage", []string{"--pipeline", "ocr", "--profile", classifyProfile}, []string{`no variant of stage "ocr-det"`, "ipa profile --stage ocr-det"}},
		{"bad step name", []string{"--pipeline", writeSpec("us.yaml", oneStep("p", "my_step")), "--profile", classifyProfile},
			[]string{`step "my_step"`, "Kubernetes"}},
		{"step named router", []string{"--pipeline", writeSpec("router.yaml", oneStep("p", "router")), "--profile", classifyProfile},
			[]string{`step "router"`, "collides"}},
		{"bad pipeline name", []string{"--pipeline", writeSpec("dot.yaml", oneStep("p.v2", "cls")), "--profile", classifyProfile},
			[]string{`pipeline name "p.v2"`}},
		{"unknown step's memory", []string{"--pipeline", "classify", "--profile", classifyProfile, "--stage-memory", "det=1Gi"},
			[]string{`no step "det"`, "classify"}},
		{"bad quantity", []string{"--pipeline", "classify", "--profile", classifyProfile, "--stage-memory", "classify=lots"},
			[]string{`"lots" is not a quantity`}},
		{"memory without step", []string{"--pipeline", "classify", "--profile", classifyProfile, "--stage-memory", "2Gi"},
			[]string{"STEP=QUANTITY"}},
		{"bad namespace", []string{"--pipeline", "classify", "--profile", classifyProfile, "--namespace", "ML"},
			[]string{`namespace "ML"`}},
		{"bad service type", []string{"--pipeline", "classify", "--profile", classifyProfile, "--router-service-type", "ExternalName"},
			[]string{"router-service-type", "ClusterIP"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out.yaml")
			args := append([]string{"manifests", "--models.dir", models, "--out", out}, tc.args...)
			err := runCLI(t, args...)
			if err == nil {
				t.Fatalf("no error for %q", args)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if _, err := os.Stat(out); err == nil {
				t.Errorf("%s written despite the error", out)
			}
		})
	}
}

// The flags' defaults are Render's.
func TestManifestsCommandDefaultsAreRenders(t *testing.T) {
	var cli CLI
	if _, err := parseCLI(t, &cli, "manifests"); err != nil {
		t.Fatal(err)
	}
	m := cli.Manifests
	if m.Namespace != kube.DefaultNamespace || m.Image != kube.DefaultImage || m.AwaitConfig != kube.DefaultAwaitConfig ||
		m.ImagePullPolicy != string(corev1.PullIfNotPresent) || m.RouterServiceType != string(corev1.ServiceTypeClusterIP) {
		t.Errorf("defaults %+v differ from kube's", m)
	}
	if !strings.Contains(stageMemoryHelp(t), "memory model") {
		t.Errorf("--stage-memory's help does not say the default comes from the memory model")
	}
}

func stageMemoryHelp(t *testing.T) string {
	t.Helper()
	var cli CLI
	p, err := kong.New(&cli, cliVars())
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range p.Model.Children {
		if n.Name == "manifests" {
			for _, f := range n.Flags {
				if f.Name == "stage-memory" {
					return f.Help
				}
			}
		}
	}
	t.Fatal("no --stage-memory flag")
	return ""
}

// modelsDir is the model repository of `make models` ($IPA_MODELS_DIR).
func modelsDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("IPA_MODELS_DIR")
	if dir == "" {
		dir = ".deps/models"
	}
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("model repository missing (run `make models`): %v", err)
	}
	return dir
}

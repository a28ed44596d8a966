package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/ipa-serving/ipa/orchestrator/kube"
	"github.com/ipa-serving/ipa/orchestrator/kube/kubetest"
)

// kubeSpec is the pipeline the Kubernetes test deploys: the classifier
// ladder cut to two variants so that each stage process loads in seconds.
const kubeSpec = `name: kc
sla: 1s
stages:
  - name: classify
    model: classify
    input: image-imagenet
    variants: [squeezenet, resnet50]
    initial: {variant: squeezenet, max_batch: 4, max_wait: 2ms, replicas: 1, cores: 1}
`

// TestPipelineOnKubernetes deploys what `ipa manifests` renders into a real
// API server (etcd, kube-apiserver, controller-manager, scheduler, kwok) and
// runs the pipeline through it under a step load.
//
// kwok's pods run nothing, so the test plays the kubelet and the
// EndpointSlice controller (kubetest.Processes): for every pod it starts the
// real `ipa` process with the pod's own container args and env on a port of
// this machine's address, probes its readiness, publishes it in an
// EndpointSlice of each Service that selects the pod (the API server refuses
// kwok's loopback pod IPs in EndpointSlices), and once the pod is deleted
// marks it terminating, stops it after the pod's preStop sleep and removes
// the slice. What a kubelet would provide is mapped: ConfigMap
// volumes to a temp folder, /models to the local repository, secretKeyRef
// and fieldRef env to their values, the in-cluster ServiceAccount to a
// kubeconfig impersonating it (so RBAC applies to the real processes), and
// the router Service's DNS name to the router pod's address (no kube-proxy).
// The router finds the stage pods through those EndpointSlices with its
// informer; the controller scales the stage
// Deployment through the scale subresource and switches the variant through
// each pod's admin API.
func TestPipelineOnKubernetes(t *testing.T) {
	if why := kubetest.Unavailable(); why != "" {
		t.Skip(why)
	}
	bin := ipaBin
	c, err := kubetest.Start(kubetest.Options{Subnet: 102})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	ns := c.Namespace(t)
	dir := t.TempDir()
	specPath := filepath.Join(dir, "kc.yaml")
	os.WriteFile(specPath, []byte(kubeSpec), 0o644)

	// Render, dry-run on the server, apply.
	manifests := filepath.Join(dir, "manifests.yaml")
	out, err := exec.Command(bin, "manifests", "--models.dir", modelsDir(t), "--pipeline", specPath,
		"--profile", "profiles/measured/classify.json", "--namespace", ns, "--image", "ipa:test", "--out", manifests).CombinedOutput()
	if err != nil {
		t.Fatalf("ipa manifests: %v\n%s", err, out)
	}
	kubectl := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("kubectl", append([]string{"--kubeconfig", c.Kubeconfig}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("kubectl %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	// The manifests hold no token: create the Secret once with the command
	// ipa manifests prints (run as printed, by a shell).
	if out, err := exec.Command("bash", "-c", "KUBECONFIG="+c.Kubeconfig+" "+kube.AdminTokenCommand(ns, "kc")).CombinedOutput(); err != nil {
		t.Fatalf("creating the admin token Secret: %v\n%s", err, out)
	}
	if s, err := c.Client.CoreV1().Secrets(ns).Get(context.Background(), kube.AdminTokenName("kc"), metav1.GetOptions{}); err != nil ||
		!regexp.MustCompile(`^[0-9a-f]{64}$`).Match(s.Data[kube.TokenKey]) {
		t.Fatalf("the admin token Secret: %v (want 64 hex digits)", err)
	}
	t.Logf("server-side dry run:\n%s", kubectl("apply", "--dry-run=server", "-f", manifests))
	if n, _ := c.Client.AppsV1().Deployments(ns).List(context.Background(), metav1.ListOptions{}); len(n.Items) != 0 {
		t.Fatalf("the dry run created %d Deployments", len(n.Items))
	}
	kubectl("apply", "-f", manifests)

	rt := &podRuntime{t: t, bin: bin, c: c, ns: ns, dir: dir, logs: map[string]*strings.Builder{}, addrs: map[string]string{},
		// Margin 2: 8/s (the load generator sends exactly 8 in each second)
		// predicts 16/s, more than resnet50 serves on one core at any batch
		// (12.8/s at b2), so a second replica; 2/s predicts 4–6/s, one. The
		// step load needs little CPU, so it can share the machine with
		// other tests.
		extra: map[string][]string{"controller": {"--controller.interval", "2s", "--controller.predictor", "reactive", "--controller.margin", "2",
			"--controller.core-capacity", "3", "--controller.scaling-cap", "3",
			"--controller.decision-log", filepath.Join(dir, "decisions.jsonl")}}}
	stopAll, err := c.Processes(ns, kube.LabelName+"=ipa", rt.start)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		stopAll()
		if t.Failed() {
			rt.dump()
		}
	}()

	router := rt.serviceAddr(kube.RouterName("kc"), 30*time.Second)
	deadline := time.Now().Add(90 * time.Second)
	for !inferOK(router) {
		if time.Now().After(deadline) {
			t.Fatalf("the pipeline did not answer through the router at %s in 90s", router)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// Follow the stage Deployment's replicas (the API may be down a while).
	stageName := kube.StageName("kc", "classify")
	var mu sync.Mutex
	var replicas []int32
	sctx, stopSampling := context.WithCancel(context.Background())
	defer stopSampling()
	go func() {
		for sctx.Err() == nil {
			if d, err := c.Client.AppsV1().Deployments(ns).Get(sctx, stageName, metav1.GetOptions{}); err == nil {
				mu.Lock()
				replicas = append(replicas, *d.Spec.Replicas)
				mu.Unlock()
			}
			time.Sleep(250 * time.Millisecond)
		}
	}()
	// An API-server outage in the middle of the high phase; then, still in
	// it (the stage scaled up), the manifests are applied again: that must
	// not undo the controller's scale.
	outage := make(chan error, 1)
	var reapplied int32
	go func() {
		t0 := time.Now()
		time.Sleep(22 * time.Second)
		if err := c.RestartAPIServer(3 * time.Second); err != nil {
			outage <- err
			return
		}
		time.Sleep(time.Until(t0.Add(31 * time.Second)))
		var out []byte
		var err error
		for range 20 {
			if out, err = exec.Command("kubectl", "--kubeconfig", c.Kubeconfig, "apply", "-f", manifests).CombinedOutput(); err == nil {
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
		if err != nil {
			outage <- fmt.Errorf("re-applying the manifests: %v\n%s", err, out)
			return
		}
		d, err := c.Client.AppsV1().Deployments(ns).Get(context.Background(), stageName, metav1.GetOptions{})
		if err == nil {
			reapplied = *d.Spec.Replicas
		}
		outage <- err
	}()
	report := filepath.Join(dir, "report.json")
	out, err = exec.Command(bin, "load", "--url", "http://"+router+"/v2/models/kc/infer", "--pattern", "step",
		"--steps", "12s@2,24s@8,30s@2", "--arrivals", "burst", "--body", "docs/sample-page.png", "--sla", "1s", "--report", report,
		"--no-progress").CombinedOutput()
	if err != nil {
		t.Fatalf("ipa load: %v\n%s", err, out)
	}
	if err := <-outage; err != nil {
		t.Fatal(err)
	}
	if reapplied < 2 {
		t.Errorf("after re-applying the manifests in the high phase the stage has %d replicas, want the controller's 2", reapplied)
	}
	var rep struct{ Sent, Succeeded, Dropped, Failed int }
	b, _ := os.ReadFile(report)
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	t.Logf("load: %+v", rep)
	if rep.Sent != rep.Succeeded+rep.Dropped+rep.Failed || rep.Failed != 0 || rep.Sent < 200 {
		t.Fatalf("every request must be answered, none may fail (scaling, switching and an API-server restart included): %+v\n%s", rep, out)
	}
	// Drops (504: the SLA passed) are answers, and on a 2-core machine shared
	// with other test packages there are some; failures would be bugs.
	if rep.Succeeded < rep.Sent/2 {
		t.Fatalf("only %d of %d requests succeeded", rep.Succeeded, rep.Sent)
	}

	// The Deployment followed the plan: up in the high phase, down after.
	kubetest.Eventually(t, 40*time.Second, "the stage Deployment back to 1 replica after the high phase", func() (bool, string) {
		d, err := c.Client.AppsV1().Deployments(ns).Get(context.Background(), stageName, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return *d.Spec.Replicas == 1 && d.Status.ReadyReplicas == 1, fmt.Sprintf("spec %d ready %d", *d.Spec.Replicas, d.Status.ReadyReplicas)
	})
	stopSampling()
	mu.Lock()
	peak := int32(0)
	for _, r := range replicas {
		peak = max(peak, r)
	}
	t.Logf("stage replicas over the run: %v", replicas)
	mu.Unlock()
	if peak < 2 {
		t.Fatalf("the stage never scaled up (peak %d replicas)", peak)
	}
	// The decision log shows the variant switch, the scaling and what the
	// actuator did, including its retries across the outage.
	decisions := readDecisions(t, filepath.Join(dir, "decisions.jsonl"))
	var switched, scaled, planned bool
	for _, d := range decisions {
		for _, ch := range d.Changes {
			switched = switched || ch.From.Variant != ch.To.Variant
		}
		for _, a := range d.Actions {
			scaled = scaled || a.Kind == "scale"
		}
		planned = planned || d.Plan != nil
	}
	if !switched || !scaled || !planned {
		t.Fatalf("decision log: variant switch %v, scale action %v, plan %v", switched, scaled, planned)
	}
	// Every stage pod runs the plan's configuration.
	last := decisions[len(decisions)-1]
	if len(last.Applied) == 0 {
		t.Fatalf("last decision has no applied configuration: %+v", last)
	}
	kubetest.Eventually(t, 20*time.Second, "every stage pod on the last plan", func() (bool, string) {
		pods, err := c.Client.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: kube.LabelStep + "=classify"})
		if err != nil {
			return false, err.Error()
		}
		var states []string
		ok := true
		for _, p := range pods.Items {
			var body struct{ Config struct{ Variant string } }
			rt.mu.Lock()
			addr, token := rt.addrs[p.Name], rt.token
			rt.mu.Unlock()
			err := getJSONAuth("http://"+addr+"/admin/stages/classify", token, &body)
			states = append(states, fmt.Sprintf("%s=%s %v", p.Name, body.Config.Variant, err))
			ok = ok && err == nil && body.Config.Variant == last.Applied[0].Variant
		}
		return ok && len(pods.Items) > 0, strings.Join(states, ", ")
	})

	// RBAC: the roles allow what the processes did and nothing more.
	ctl, err := c.As(ns, kube.ControllerName("kc"))
	if err != nil {
		t.Fatal(err)
	}
	rtr, err := c.As(ns, kube.RouterName("kc"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := ctl.AppsV1().Deployments(ns).GetScale(ctx, stageName, metav1.GetOptions{}); err != nil {
		t.Fatalf("the controller's role cannot read the scale: %v", err)
	}
	forbidden := map[string]error{}
	forbidden["controller deletes a Deployment"] = ctl.AppsV1().Deployments(ns).Delete(ctx, stageName, metav1.DeleteOptions{DryRun: []string{"All"}})
	_, forbidden["controller reads Secrets"] = ctl.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{})
	_, forbidden["controller lists Pods"] = ctl.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	_, forbidden["controller creates a Pod"] = ctl.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "x"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "x", Image: "x"}}}}, metav1.CreateOptions{DryRun: []string{"All"}})
	_, forbidden["controller reads Deployments in another namespace"] = ctl.AppsV1().Deployments("default").List(ctx, metav1.ListOptions{})
	_, forbidden["router reads the scale"] = rtr.AppsV1().Deployments(ns).GetScale(ctx, stageName, metav1.GetOptions{})
	_, forbidden["router reads Deployments"] = rtr.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{})
	for what, err := range forbidden {
		if !apierrors.IsForbidden(err) {
			t.Errorf("%s: %v, want 403 Forbidden", what, err)
		}
	}
}

// podRuntime runs the container of a kwok pod as a real process.
type podRuntime struct {
	t     *testing.T
	bin   string
	c     *kubetest.Cluster
	ns    string
	dir   string
	extra map[string][]string // component → extra args (test-speed settings)
	token string

	mu    sync.Mutex
	logs  map[string]*strings.Builder // pod → output
	addrs map[string]string           // pod → its process's address
}

var varRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

func (r *podRuntime) start(p *corev1.Pod, addr string) kubetest.Container {
	t := r.t
	ctr := p.Spec.Containers[0]
	failed := kubetest.Container{Ready: func() bool { return false }, Stop: func() {}}
	if ctr.Name != kube.ContainerName {
		t.Errorf("pod %s: container %q, want %q", p.Name, ctr.Name, kube.ContainerName)
		return failed
	}
	r.mu.Lock()
	r.addrs[p.Name] = addr
	r.mu.Unlock()
	env := map[string]string{}
	for _, e := range ctr.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.FieldRef != nil:
			env[e.Name] = map[string]string{"metadata.namespace": p.Namespace, "metadata.name": p.Name, "status.podIP": p.Status.PodIP}[e.ValueFrom.FieldRef.FieldPath]
		case e.ValueFrom.SecretKeyRef != nil:
			s, err := r.c.Client.CoreV1().Secrets(p.Namespace).Get(context.Background(), e.ValueFrom.SecretKeyRef.Name, metav1.GetOptions{})
			if err != nil {
				t.Errorf("pod %s: env %s: %v", p.Name, e.Name, err)
				return failed
			}
			env[e.Name] = string(s.Data[e.ValueFrom.SecretKeyRef.Key])
			if e.Name == "IPA_ADMIN_TOKEN" {
				r.mu.Lock()
				r.token = env[e.Name]
				r.mu.Unlock()
			}
		}
	}
	// Volumes: ConfigMaps become folders; /models is the local repository.
	mounts := map[string]string{}
	for _, m := range ctr.VolumeMounts {
		for _, v := range p.Spec.Volumes {
			if v.Name != m.Name {
				continue
			}
			switch {
			case v.ConfigMap != nil:
				cm, err := r.c.Client.CoreV1().ConfigMaps(p.Namespace).Get(context.Background(), v.ConfigMap.Name, metav1.GetOptions{})
				if err != nil {
					t.Errorf("pod %s: volume %s: %v", p.Name, v.Name, err)
					return failed
				}
				d := filepath.Join(r.dir, "volumes", p.Name, v.Name)
				os.MkdirAll(d, 0o755)
				for k, val := range cm.Data {
					os.WriteFile(filepath.Join(d, k), []byte(val), 0o644)
				}
				mounts[m.MountPath] = d
			case v.EmptyDir != nil:
				d := filepath.Join(r.dir, "volumes", p.Name, v.Name)
				os.MkdirAll(d, 0o755)
				mounts[m.MountPath] = d
			case v.Projected != nil: // the ServiceAccount token: a kubeconfig below
			case v.PersistentVolumeClaim != nil: // --models-volume
				mounts[m.MountPath] = modelsDir(t)
			default:
				t.Errorf("pod %s: volume %s of a kind this test cannot provide", p.Name, v.Name)
				return failed
			}
		}
	}
	if _, ok := mounts["/models"]; !ok {
		mounts["/models"] = modelsDir(t) // baked into the image
	}
	abs, _ := filepath.Abs(mounts["/models"])
	mounts["/models"] = abs
	var args []string
	for _, a := range append(append([]string{}, ctr.Command...), ctr.Args...) {
		a = varRef.ReplaceAllStringFunc(a, func(m string) string { return env[m[2:len(m)-1]] })
		best := "" // the longest mount path the argument lies under
		for from := range mounts {
			if (a == from || strings.HasPrefix(a, from+"/")) && len(from) > len(best) {
				best = from
			}
		}
		if best != "" {
			a = mounts[best] + strings.TrimPrefix(a, best)
		}
		if strings.HasPrefix(a, "0.0.0.0:") {
			a = addr
		}
		args = append(args, a)
	}
	component := p.Labels[kube.LabelComponent]
	args = append(args, r.extra[component]...)
	cmdEnv := append(os.Environ(), "IPA_ORT_LIB="+os.Getenv("IPA_ORT_LIB"))
	for k, v := range env {
		cmdEnv = append(cmdEnv, k+"="+v)
	}
	if p.Spec.ServiceAccountName != "" && (p.Spec.AutomountServiceAccountToken == nil || *p.Spec.AutomountServiceAccountToken) {
		cmdEnv = append(cmdEnv, "KUBECONFIG="+r.kubeconfigFor(p.Spec.ServiceAccountName))
	}
	log := &strings.Builder{}
	r.mu.Lock()
	r.logs[p.Name] = log
	r.mu.Unlock()
	// Start in the background: a Service this pod calls (the controller
	// calls the router) may get its process only in a later round.
	var cmd *exec.Cmd
	launched, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(launched)
		for i, a := range args { // Service DNS names: the address of a pod's process
			if strings.HasPrefix(a, "http://") {
				svc, _, _ := strings.Cut(strings.TrimPrefix(a, "http://"), ":")
				args[i] = "http://" + r.serviceAddr(svc, 30*time.Second)
			}
		}
		cmd = exec.Command(r.bin, args...)
		cmd.Env = cmdEnv
		lw := &lockedWriter{mu: &r.mu, b: log}
		cmd.Stdout, cmd.Stderr = lw, lw
		r.mu.Lock()
		fmt.Fprintf(log, "$ ipa %s\n", strings.Join(args, " "))
		r.mu.Unlock()
		if err := cmd.Start(); err != nil {
			t.Errorf("pod %s: %v", p.Name, err)
			cmd = nil
			close(exited)
			return
		}
		go func() { cmd.Wait(); close(exited) }()
	}()
	preStop := time.Duration(0)
	if l := ctr.Lifecycle; l != nil && l.PreStop != nil && l.PreStop.Sleep != nil {
		preStop = time.Duration(l.PreStop.Sleep.Seconds) * time.Second
	}
	probe := "/v2/health/ready"
	if component == "controller" {
		probe = "/healthz"
	}
	client := &http.Client{Timeout: time.Second}
	return kubetest.Container{
		Ready: func() bool {
			resp, err := client.Get("http://" + addr + probe)
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		},
		Stop: func() {
			<-launched
			if cmd == nil {
				return
			}
			time.Sleep(preStop) // endpoints are gone before the process stops
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(30 * time.Second):
				cmd.Process.Kill()
				<-exited
			}
		},
	}
}

// serviceAddr resolves a Service to the address of one of its pods'
// processes (the test has no DNS or kube-proxy).
func (r *podRuntime) serviceAddr(name string, wait time.Duration) string {
	deadline := time.Now().Add(wait)
	for {
		svc, err := r.c.Client.CoreV1().Services(r.ns).Get(context.Background(), name, metav1.GetOptions{})
		if err == nil {
			pods, err := r.c.Client.CoreV1().Pods(r.ns).List(context.Background(), metav1.ListOptions{LabelSelector: labels.Set(svc.Spec.Selector).String()})
			if err == nil {
				for _, p := range pods.Items {
					r.mu.Lock()
					addr := r.addrs[p.Name]
					r.mu.Unlock()
					if addr != "" && p.DeletionTimestamp == nil {
						return addr
					}
				}
			}
		}
		if time.Now().After(deadline) {
			r.t.Errorf("Service %s has no pod with an address after %s", name, wait)
			return "127.0.0.1:1"
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// kubeconfigFor writes a kubeconfig that acts as the ServiceAccount sa, the
// identity an in-cluster pod would have.
func (r *podRuntime) kubeconfigFor(sa string) string {
	b, err := os.ReadFile(r.c.Kubeconfig)
	if err != nil {
		r.t.Fatal(err)
	}
	s := strings.Replace(string(b), "  user:\n", fmt.Sprintf("  user:\n    as: system:serviceaccount:%s:%s\n", r.ns, sa), 1)
	path := filepath.Join(r.dir, "kubeconfig-"+sa)
	os.WriteFile(path, []byte(s), 0o600)
	return path
}

func (r *podRuntime) dump() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for pod, log := range r.logs {
		s := log.String()
		if len(s) > 6000 {
			s = s[:1500] + "\n…\n" + s[len(s)-4500:]
		}
		r.t.Logf("pod %s:\n%s", pod, s)
	}
	r.t.Logf("kube-apiserver log tail:\n%s", r.c.Logs("kube-apiserver", 20))
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *strings.Builder
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// inferOK reports whether the router answers one classification.
func inferOK(addr string) bool {
	body, err := os.ReadFile("docs/sample-page.png")
	if err != nil {
		return false
	}
	resp, err := http.Post("http://"+addr+"/v2/models/kc/infer", "image/png", strings.NewReader(string(body)))
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == 200
}

func getJSONAuth(url, token string, out any) error {
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

type kubeDecision struct {
	Plan    *json.RawMessage `json:"plan"`
	Changes []struct {
		From, To struct{ Variant string }
	} `json:"changes"`
	Actions []struct{ Kind, Object, What string } `json:"actions"`
	Applied []struct{ Variant string }            `json:"applied"`
	Error   string                                `json:"error"`
}

func readDecisions(t *testing.T, path string) []kubeDecision {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []kubeDecision
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var d kubeDecision
		if err := json.Unmarshal(sc.Bytes(), &d); err != nil {
			t.Fatalf("decision %q: %v", sc.Text(), err)
		}
		out = append(out, d)
	}
	if len(out) == 0 {
		t.Fatalf("empty decision log %s", path)
	}
	return out
}

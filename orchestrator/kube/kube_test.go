package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/ipa-serving/ipa/models"
	"github.com/ipa-serving/ipa/orchestrator"
	"github.com/ipa-serving/ipa/orchestrator/kube/kubetest"
)

// cluster is the control plane this package's integration tests share (nil
// when IPA_K8S_BIN is unset: plain `go test` outside make).
var cluster *kubetest.Cluster

func TestMain(m *testing.M) {
	if kubetest.Unavailable() == "" {
		var err error
		cluster, err = kubetest.Start(kubetest.Options{Subnet: 101})
		if err != nil {
			fmt.Fprintln(os.Stderr, "kube tests:", err)
			os.Exit(1)
		}
	}
	code := m.Run()
	if cluster != nil {
		cluster.Stop()
	}
	os.Exit(code)
}

func needCluster(t *testing.T) *kubetest.Cluster {
	t.Helper()
	if cluster == nil {
		t.Skip(kubetest.Unavailable())
	}
	return cluster
}

func TestEndpointsFollowTheEndpointSliceConditions(t *testing.T) {
	yes, no := true, false
	http, metricsPort := PortName, "metrics"
	p8080, p9090 := int32(8080), int32(9090)
	slice := func(ports []discoveryv1.EndpointPort, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
		return &discoveryv1.EndpointSlice{AddressType: discoveryv1.AddressTypeIPv4, Ports: ports, Endpoints: eps}
	}
	ep := func(ip string, ready, term *bool) discoveryv1.Endpoint {
		return discoveryv1.Endpoint{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: ready, Terminating: term},
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: "pod-" + ip}}
	}
	ports := []discoveryv1.EndpointPort{{Name: &metricsPort, Port: &p9090}, {Name: &http, Port: &p8080}}
	got := Endpoints([]*discoveryv1.EndpointSlice{
		slice(ports, ep("10.0.0.3", &yes, nil), ep("10.0.0.1", nil, nil), ep("10.0.0.2", &no, nil), ep("10.0.0.4", &yes, &yes)),
		slice(ports, ep("10.0.0.1", &yes, nil)), // the same pod in a second slice (during a slice's update)
		{AddressType: discoveryv1.AddressTypeFQDN, Ports: ports, Endpoints: []discoveryv1.Endpoint{ep("x.example", nil, nil)}},
		slice([]discoveryv1.EndpointPort{{Name: &metricsPort, Port: &p9090}, {Port: &p8080}}, ep("10.0.0.9", nil, nil)), // no "http" port
	})
	want := []Endpoint{
		{Addr: "10.0.0.1:8080", Pod: "pod-10.0.0.1", Ready: true},
		{Addr: "10.0.0.2:8080", Pod: "pod-10.0.0.2"},
		{Addr: "10.0.0.3:8080", Pod: "pod-10.0.0.3", Ready: true},
		{Addr: "10.0.0.4:8080", Pod: "pod-10.0.0.4", Terminating: true},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("endpoints\n got %+v\nwant %+v", got, want)
	}
	if r := ReadyAddrs(got); strings.Join(r, " ") != "10.0.0.1:8080 10.0.0.3:8080" {
		t.Fatalf("ready: %v", r)
	}
}

// fakeStage answers a stage's admin API on a pod's IP: it stands in for the
// container of a kwok pod in the actuator's tests (the end-to-end test in
// package main runs real `ipa stage` processes instead).
type fakeStage struct {
	srv *http.Server
	mu  sync.Mutex
	cfg adminConfig
	n   int // POSTs accepted
}

func startFakeStage(t *testing.T, addr, stage string, initial adminConfig) (*fakeStage, error) {
	var ln net.Listener
	var err error
	for range 50 { // the address may still be held by a process of a pod just deleted
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return nil, err
	}
	f := &fakeStage{cfg: initial}
	mux := http.NewServeMux()
	mux.HandleFunc("/admin/stages/"+stage, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok" {
			http.Error(w, `{"error":"token"}`, http.StatusUnauthorized)
			return
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		if r.Method == http.MethodPost {
			var c adminConfig
			if err := json.NewDecoder(r.Body).Decode(&c); err != nil || c.Variant == "" || c.Replicas != 1 {
				http.Error(w, fmt.Sprintf(`{"error":"bad config %+v %v"}`, c, err), http.StatusBadRequest)
				return
			}
			f.cfg = c
			f.n++
		}
		json.NewEncoder(w).Encode(map[string]any{"config": f.cfg})
	})
	f.srv = &http.Server{Handler: mux}
	go f.srv.Serve(ln)
	return f, nil
}

func (f *fakeStage) config() adminConfig {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cfg
}

// deployStage creates the Deployment and Service of one step the way
// 'ipa manifests' names and labels them.
func deployStage(t *testing.T, cs kubernetes.Interface, ns, pipeline, step string, replicas int32) {
	t.Helper()
	labels := map[string]string{LabelName: "ipa", LabelComponent: "stage", LabelPipeline: pipeline, LabelStep: step}
	ctx := context.Background()
	_, err := cs.AppsV1().Deployments(ns).Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: StageName(pipeline, step), Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: ContainerName, Image: "ipa:test",
					Ports: []corev1.ContainerPort{{Name: PortName, ContainerPort: Port}}}}},
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: StageName(pipeline, step), Labels: labels},
		Spec:       corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{{Name: PortName, Port: Port, TargetPort: intstr.FromString(PortName)}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
}

// fakePods runs a fakeStage for every pod of the step.
type fakePods struct {
	mu   sync.Mutex
	byIP map[string]*fakeStage
	stop func()
}

func runFakePods(t *testing.T, c *kubetest.Cluster, ns, pipeline, step, stage string, initial adminConfig) *fakePods {
	fp := &fakePods{byIP: map[string]*fakeStage{}}
	var err error
	fp.stop, err = c.Processes(ns, LabelStep+"="+step, func(p *corev1.Pod, addr string) kubetest.Container {
		f, err := startFakeStage(t, addr, stage, initial)
		if err != nil {
			t.Errorf("pod %s: %v", p.Name, err)
			return kubetest.Container{Stop: func() {}}
		}
		fp.mu.Lock()
		fp.byIP[addr] = f
		fp.mu.Unlock()
		return kubetest.Container{Stop: func() {
			f.srv.Close()
			fp.mu.Lock()
			delete(fp.byIP, addr)
			fp.mu.Unlock()
		}}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fp.stop)
	return fp
}

// configs returns the live configuration of every running fake pod.
func (fp *fakePods) configs() []adminConfig {
	fp.mu.Lock()
	defer fp.mu.Unlock()
	var out []adminConfig
	for _, f := range fp.byIP {
		out = append(out, f.config())
	}
	return out
}

func replicasOf(t *testing.T, cs kubernetes.Interface, ns, name string) (spec, ready int32, note string) {
	d, err := cs.AppsV1().Deployments(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		return -1, -1, err.Error()
	}
	return *d.Spec.Replicas, d.Status.ReadyReplicas, d.Annotations[AnnotationConfig]
}

// allOn reports whether n pods run and every one has the configuration c.
func allOn(fp *fakePods, n int, c models.StageConfig) (bool, string) {
	cfgs := fp.configs()
	ok := len(cfgs) == n
	for _, x := range cfgs {
		ok = ok && x.Variant == c.Variant && x.MaxBatch == c.MaxBatch && x.Cores == c.Cores && x.Replicas == 1
	}
	return ok, fmt.Sprintf("%d pods: %+v", len(cfgs), cfgs)
}

// rig is step "cls" (repository stage "classify") of a pipeline in a
// namespace of its own: its Deployment and Service, a fake stage process
// per pod, and an actuator over them.
type rig struct {
	c        *kubetest.Cluster
	ns       string
	pipeline string
	pods     *fakePods
	ctx      context.Context
	a        *Actuator
}

func startRig(t *testing.T, pipeline string) *rig {
	t.Helper()
	c := needCluster(t)
	r := &rig{c: c, ns: c.Namespace(t), pipeline: pipeline}
	deployStage(t, c.Client, r.ns, pipeline, "cls", 1)
	r.pods = runFakePods(t, c, r.ns, pipeline, "cls", "classify", adminConfig{Variant: "small", MaxBatch: 1, MaxWait: "1ms", Replicas: 1, Cores: 1})
	var cancel context.CancelFunc
	r.ctx, cancel = context.WithCancel(context.Background())
	t.Cleanup(cancel)
	r.a = r.actuator(t)
	return r
}

// actuator starts an actuator over the rig (a controller's).
func (r *rig) actuator(t *testing.T) *Actuator {
	t.Helper()
	a, err := NewActuator(r.ctx, r.c.Client, ActuatorOptions{Namespace: r.ns, Pipeline: r.pipeline, Steps: []string{"cls"}, Stages: []string{"classify"}, Token: "tok"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	return a
}

func TestActuatorScalesDeploymentsAndConfiguresEveryPodLive(t *testing.T) {
	r := startRig(t, "p")
	c, ns, pods, ctx, a := r.c, r.ns, r.pods, r.ctx, r.a
	kubetest.Eventually(t, 20*time.Second, "one ready pod", func() (bool, string) {
		return allOn(pods, 1, models.StageConfig{Variant: "small", MaxBatch: 1, Cores: 1})
	})
	// With no plan recorded, Current asks a ready pod.
	var cur []models.StageConfig
	kubetest.Eventually(t, 10*time.Second, "Current from the pod", func() (bool, string) {
		var err error
		cur, err = a.Current(ctx)
		return err == nil, fmt.Sprint(err)
	})
	if want := (models.StageConfig{Variant: "small", MaxBatch: 1, MaxWait: time.Millisecond, Replicas: 1, Cores: 1}); cur[0] != want {
		t.Fatalf("Current %+v, want %+v", cur[0], want)
	}

	up := models.StageConfig{Variant: "large", MaxBatch: 4, MaxWait: 5 * time.Millisecond, Replicas: 3, Cores: 2}
	if err := a.Apply(ctx, 0, up); err != nil {
		t.Fatal(err)
	}
	// Scaled through the scale subresource; the two new pods are configured
	// as they appear, the old one switched live.
	kubetest.Eventually(t, 30*time.Second, "3 pods on the new plan", func() (bool, string) {
		spec, ready, _ := replicasOf(t, c.Client, ns, "p-cls")
		ok, s := allOn(pods, 3, up)
		return ok && spec == 3 && ready == 3, fmt.Sprintf("spec %d ready %d; %s", spec, ready, s)
	})
	_, _, note := replicasOf(t, c.Client, ns, "p-cls")
	var noted models.StageConfig
	if err := json.Unmarshal([]byte(note), &noted); err != nil || noted != up {
		t.Fatalf("annotation %q (%v), want %+v", note, err, up)
	}
	if cur, err := a.Current(ctx); err != nil || cur[0] != up {
		t.Fatalf("Current after Apply: %+v %v", cur, err)
	}
	kinds := map[string]int{}
	for _, act := range a.TakeActions() {
		kinds[act.Kind]++
	}
	if kinds["scale"] != 1 || kinds["configure"] != 3 || kinds["annotate"] != 1 {
		t.Fatalf("actions %v, want 1 scale, 1 annotate, 3 pods configured", kinds)
	}

	down := up
	down.Replicas, down.Variant = 1, "small"
	if err := a.Apply(ctx, 0, down); err != nil {
		t.Fatal(err)
	}
	kubetest.Eventually(t, 30*time.Second, "scaled down to 1 pod on the new plan", func() (bool, string) {
		spec, _, _ := replicasOf(t, c.Client, ns, "p-cls")
		ok, s := allOn(pods, 1, down)
		return ok && spec == 1, fmt.Sprintf("spec %d; %s", spec, s)
	})

	// A restarted controller adopts the plan from the annotation.
	b := r.actuator(t)
	if cur, err := b.Current(ctx); err != nil || cur[0] != down {
		t.Fatalf("a new actuator reads %+v (%v), want %+v", cur, err, down)
	}
}

// A pod whose container restarted forgets its configuration; the actuator
// notices on its periodic check and configures it again.
func TestActuatorConfiguresAPodThatLostItsConfiguration(t *testing.T) {
	r := startRig(t, "q")
	pods, ctx, a := r.pods, r.ctx, r.a
	want := models.StageConfig{Variant: "large", MaxBatch: 2, MaxWait: time.Millisecond, Replicas: 1, Cores: 1}
	kubetest.Eventually(t, 20*time.Second, "plan applied", func() (bool, string) {
		err := a.Apply(ctx, 0, want)
		ok, s := allOn(pods, 1, want)
		return err == nil && ok, fmt.Sprintf("%v %s", err, s)
	})
	pods.mu.Lock()
	for _, f := range pods.byIP {
		f.mu.Lock()
		f.cfg = adminConfig{Variant: "small", MaxBatch: 1, MaxWait: "1ms", Replicas: 1, Cores: 1}
		f.mu.Unlock()
	}
	pods.mu.Unlock()
	kubetest.Eventually(t, 15*time.Second, "the pod configured again", func() (bool, string) { return allOn(pods, 1, want) })
}

// An API-server outage: Current answers from the informers' cache, Apply
// fails (the decision log shows it), the pods keep serving, and when the API
// returns the actuator reaches the plan without another Apply.
func TestActuatorCatchesUpAfterAnAPIServerOutage(t *testing.T) {
	r := startRig(t, "r")
	c, ns, pods, ctx, a := r.c, r.ns, r.pods, r.ctx, r.a
	kubetest.Eventually(t, 20*time.Second, "one pod", func() (bool, string) {
		return allOn(pods, 1, models.StageConfig{Variant: "small", MaxBatch: 1, Cores: 1})
	})
	restarted := make(chan error, 1)
	go func() { restarted <- c.RestartAPIServer(4 * time.Second) }()
	// Wait until the API is down.
	kubetest.Eventually(t, 10*time.Second, "the API server down", func() (bool, string) {
		_, err := c.Client.Discovery().ServerVersion()
		return err != nil, "still up"
	})
	if _, err := a.Current(ctx); err != nil {
		t.Fatalf("Current during the outage: %v", err)
	}
	want := models.StageConfig{Variant: "large", MaxBatch: 2, MaxWait: time.Millisecond, Replicas: 2, Cores: 1}
	actx, acancel := context.WithTimeout(ctx, 20*time.Second)
	err := a.Apply(actx, 0, want)
	acancel()
	if err == nil {
		t.Fatalf("Apply during the outage reported success")
	}
	t.Logf("Apply during the outage: %v", err)
	// The live switch needs no API server: the running pod is already on it.
	if ok, s := allOn(pods, 1, want); !ok {
		t.Fatalf("the running pod was not switched during the outage: %s", s)
	}
	if err := <-restarted; err != nil {
		t.Fatal(err)
	}
	kubetest.Eventually(t, 60*time.Second, "2 pods on the plan after the outage", func() (bool, string) {
		spec, _, _ := replicasOf(t, c.Client, ns, "r-cls")
		ok, s := allOn(pods, 2, want)
		return ok && spec == 2, fmt.Sprintf("spec %d; %s", spec, s)
	})
	var kinds []string
	for _, act := range a.TakeActions() {
		kinds = append(kinds, act.Kind)
	}
	if !strings.Contains(strings.Join(kinds, " "), "scale") {
		t.Fatalf("actions %v lack the scale", kinds)
	}
}

var _ orchestrator.ActionReporter = (*Actuator)(nil)
var _ orchestrator.Actuator = (*Actuator)(nil)

type adminConfig = orchestrator.AdminConfig

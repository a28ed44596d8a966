// Package kubetest starts a throw-away Kubernetes control plane on
// 127.0.0.1 for tests: etcd, kube-apiserver, kube-controller-manager,
// kube-scheduler and kwok as a fake kubelet, through scripts/k8s-local.sh and
// the binaries scripts/k8s-deps.sh built (IPA_K8S_BIN, set by the Makefile).
//
// Processes runs a real process for each pod (kwok's pods run nothing) and
// publishes it in EndpointSlices, so discovery and the actuator reach it.
package kubetest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Cluster is a running control plane.
type Cluster struct {
	Kubeconfig string
	Config     *rest.Config // the admin's (system:masters)
	Client     kubernetes.Interface
	Subnet     int // pods get 127.0.Subnet.1–253
	script     string
	env        []string
	work       string
}

// Options choose the loopback subnet of pod IPs (1–254, default 100); two
// clusters running at once need different ones.
type Options struct{ Subnet int }

// Unavailable explains why Start cannot run here (empty when it can): the
// binaries come from `make k8s-deps` and the Makefile passes their folder in
// IPA_K8S_BIN.
func Unavailable() string {
	bin := os.Getenv("IPA_K8S_BIN")
	if bin == "" {
		return "IPA_K8S_BIN is unset: run the Kubernetes tests through `make test` (it builds the control plane's binaries with scripts/k8s-deps.sh)"
	}
	return ""
}

// Start brings a cluster up on free ports; Stop tears it down. It fails when
// IPA_K8S_BIN is set but its binaries are missing.
func Start(opt Options) (*Cluster, error) {
	if why := Unavailable(); why != "" {
		return nil, fmt.Errorf("%s", why)
	}
	bin := os.Getenv("IPA_K8S_BIN")
	for _, b := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"} {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			return nil, fmt.Errorf("IPA_K8S_BIN=%s lacks %s (run `make k8s-deps`): %w", bin, b, err)
		}
	}
	if opt.Subnet == 0 {
		opt.Subnet = 100
	}
	_, self, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(self), "..", "..", "..")
	work, err := os.MkdirTemp("", "ipa-k8s-")
	if err != nil {
		return nil, err
	}
	etcdPort, err := freePortPair()
	if err != nil {
		return nil, err
	}
	apiPort, err := freePortPair()
	if err != nil {
		return nil, err
	}
	c := &Cluster{Kubeconfig: filepath.Join(work, "kubeconfig"), Subnet: opt.Subnet, work: work,
		script: filepath.Join(root, "scripts", "k8s-local.sh")}
	c.env = append(os.Environ(), "K8S_BIN="+bin, "K8S_WORK="+work,
		"K8S_ETCD_PORT="+strconv.Itoa(etcdPort), "K8S_API_PORT="+strconv.Itoa(apiPort),
		fmt.Sprintf("KWOK_POD_CIDR=127.0.%d.0/24", opt.Subnet), fmt.Sprintf("KWOK_NODE_IP=127.0.%d.254", opt.Subnet),
		// Service ClusterIPs are never dialled by the tests; keep them off the pod subnets.
		fmt.Sprintf("K8S_SERVICE_CIDR=127.1.%d.0/24", opt.Subnet))
	if out, err := c.run("up"); err != nil {
		c.run("down")
		return nil, fmt.Errorf("starting the control plane: %w\n%s", err, out)
	}
	c.Config, err = clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		c.Stop()
		return nil, err
	}
	c.Config.QPS, c.Config.Burst = 200, 400
	c.Client, err = kubernetes.NewForConfig(c.Config)
	if err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

func (c *Cluster) run(args ...string) (string, error) {
	cmd := exec.Command("bash", append([]string{c.script}, args...)...)
	cmd.Env = c.env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Stop tears the cluster down and removes its state.
func (c *Cluster) Stop() {
	c.run("down")
	os.RemoveAll(c.work)
}

// RestartAPIServer stops kube-apiserver, waits pause, and starts it again
// (etcd keeps the state): an API-server outage.
func (c *Cluster) RestartAPIServer(pause time.Duration) error {
	out, err := c.run("restart-apiserver", strconv.FormatFloat(pause.Seconds(), 'f', 3, 64))
	if err != nil {
		return fmt.Errorf("restarting kube-apiserver: %w\n%s", err, out)
	}
	return nil
}

// Logs returns the tail of a component's log (e.g. "kube-apiserver").
func (c *Cluster) Logs(component string, lines int) string {
	b, _ := os.ReadFile(filepath.Join(c.work, "logs", component+".log"))
	l := strings.Split(string(b), "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}

// Namespace creates a namespace for t and deletes it when t ends.
func (c *Cluster) Namespace(t testing.TB) string {
	t.Helper()
	name := strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	if len(name) > 50 {
		name = name[:50]
	}
	name = strings.Trim(name, "-") + "-" + strconv.FormatInt(time.Now().UnixNano()%1e6, 36)
	ctx := context.Background()
	_, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating namespace %s: %v", name, err)
	}
	t.Cleanup(func() { c.Client.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{}) })
	// Pods need the namespace's default ServiceAccount, which a controller creates.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := c.Client.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{}); err == nil {
			return name
		}
		if time.Now().After(deadline) {
			t.Fatalf("namespace %s got no default ServiceAccount in 30s", name)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// As returns a client that acts as the ServiceAccount ns/name, for RBAC
// checks (the admin impersonates it).
func (c *Cluster) As(ns, name string) (kubernetes.Interface, error) {
	cfg := rest.CopyConfig(c.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:" + ns + ":" + name}
	return kubernetes.NewForConfig(cfg)
}

// freePortPair returns a port p such that p and p+1 are free on 127.0.0.1
// (etcd's peer port is its client port + 1).
func freePortPair() (int, error) {
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		p := l.Addr().(*net.TCPAddr).Port
		l2, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p+1))
		l.Close()
		if err == nil {
			l2.Close()
			return p, nil
		}
	}
	return 0, fmt.Errorf("no pair of free ports on 127.0.0.1")
}

// Container is a pod's stand-in process, as start returns it.
type Container struct {
	// Ready is the readiness probe, polled every 100 ms (nil: always ready).
	Ready func() bool
	// Stop stops the process (after the pod's preStop hook, if it has one).
	Stop func()
}

// Processes plays the kubelet and the EndpointSlice controller for the pods
// matching selector in ns.
//
// kwok makes pods Running without running anything, and the pod IPs it
// hands out are of no use here: the API server refuses EndpointSlices with
// loopback addresses, and this machine has no other addresses to spare.
// So, for every pod, Processes picks a free port on the host's own address
// (HostIP), calls start to run the pod's process there, probes its
// readiness, and writes one EndpointSlice per pod and Service that selects
// it (port name and number of the Service's target port, conditions
// ready/serving/terminating as the real controller sets them, managed-by
// "ipa-kubetest"). When a pod is deleted its endpoints turn terminating, its
// process is stopped and then its slices are deleted. The cluster's own
// endpointslice controller is not run (scripts/k8s-local.sh).
//
// It returns a function that stops everything still running.
func (c *Cluster) Processes(ns, selector string, start func(pod *corev1.Pod, addr string) Container) (stopAll func(), err error) {
	host, err := HostIP()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	type proc struct {
		pod    *corev1.Pod
		addr   string
		port   int32
		ctr    Container
		ready  bool
		slices map[string]string // Service → slice written with this state ("" none)
	}
	running := map[string]*proc{} // pod UID → process
	done := make(chan struct{})
	api := c.Client
	writeSlices := func(p *proc, services []corev1.Service, terminating bool) {
		for _, svc := range services {
			if !selects(&svc, p.pod) {
				continue
			}
			portName := ""
			if len(svc.Spec.Ports) > 0 {
				portName = svc.Spec.Ports[0].Name
			}
			ready := p.ready && !terminating
			state := fmt.Sprint(ready, terminating)
			if p.slices[svc.Name] == state {
				continue
			}
			name := p.pod.Name + "-" + svc.Name
			if len(name) > 63 {
				name = name[:63]
			}
			es := &discoveryv1.EndpointSlice{
				ObjectMeta: metav1.ObjectMeta{Name: strings.TrimRight(name, "-"), Namespace: ns, Labels: map[string]string{
					discoveryv1.LabelServiceName: svc.Name, discoveryv1.LabelManagedBy: "ipa-kubetest"}},
				AddressType: discoveryv1.AddressTypeIPv4,
				Ports:       []discoveryv1.EndpointPort{{Name: &portName, Port: &p.port}},
				Endpoints: []discoveryv1.Endpoint{{Addresses: []string{host},
					Conditions: discoveryv1.EndpointConditions{Ready: &ready, Serving: &ready, Terminating: &terminating},
					TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: p.pod.Name, UID: p.pod.UID}}},
			}
			var err error
			if p.slices[svc.Name] == "" {
				_, err = api.DiscoveryV1().EndpointSlices(ns).Create(ctx, es, metav1.CreateOptions{})
			} else {
				var cur *discoveryv1.EndpointSlice
				if cur, err = api.DiscoveryV1().EndpointSlices(ns).Get(ctx, es.Name, metav1.GetOptions{}); err == nil {
					es.ResourceVersion = cur.ResourceVersion
					_, err = api.DiscoveryV1().EndpointSlices(ns).Update(ctx, es, metav1.UpdateOptions{})
				}
			}
			if err == nil { // else: retried on the next round (the API may be down)
				p.slices[svc.Name] = state
			}
		}
	}
	retire := func(p *proc) {
		delete(running, string(p.pod.UID))
		go func() {
			p.ctr.Stop()
			for svc := range p.slices {
				name := strings.TrimRight(truncate(p.pod.Name+"-"+svc, 63), "-")
				for range 100 { // until the API answers
					err := api.DiscoveryV1().EndpointSlices(ns).Delete(context.Background(), name, metav1.DeleteOptions{})
					if err == nil || apierrors.IsNotFound(err) {
						break
					}
					time.Sleep(200 * time.Millisecond)
				}
			}
		}()
	}
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			pods, err1 := api.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
			svcs, err2 := api.CoreV1().Services(ns).List(ctx, metav1.ListOptions{})
			if err1 == nil && err2 == nil { // the API server may be restarting: keep what runs
				live := map[string]bool{}
				for i := range pods.Items {
					pod := &pods.Items[i]
					uid := string(pod.UID)
					if pod.DeletionTimestamp != nil || pod.Status.PodIP == "" {
						continue
					}
					live[uid] = true
					p := running[uid]
					if p == nil {
						port, err := freePort(host)
						if err != nil {
							continue
						}
						p = &proc{pod: pod.DeepCopy(), port: int32(port), addr: net.JoinHostPort(host, strconv.Itoa(port)), slices: map[string]string{}}
						p.ctr = start(p.pod, p.addr)
						running[uid] = p
					}
					p.ready = p.ctr.Ready == nil || p.ctr.Ready()
					writeSlices(p, svcs.Items, false)
				}
				for uid, p := range running {
					if !live[uid] {
						writeSlices(p, svcs.Items, true)
						retire(p)
					}
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
		for _, p := range running {
			p.ctr.Stop()
		}
	}()
	return func() { cancel(); <-done }, nil
}

func selects(svc *corev1.Service, pod *corev1.Pod) bool {
	if len(svc.Spec.Selector) == 0 {
		return false
	}
	for k, v := range svc.Spec.Selector {
		if pod.Labels[k] != v {
			return false
		}
	}
	return true
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// HostIP returns this machine's first non-loopback IPv4 address: the
// address pods' stand-in processes listen on.
func HostIP() (string, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return "", err
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() && !n.IP.IsLinkLocalUnicast() {
			return n.IP.String(), nil
		}
	}
	return "", fmt.Errorf("no non-loopback IPv4 address on this machine: EndpointSlices cannot point at loopback addresses")
}

func freePort(host string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Eventually polls cond every 50 ms until it holds, or fails t after d with
// what and cond's last description of the state.
func Eventually(t testing.TB, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s; now %s", d, what, state)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

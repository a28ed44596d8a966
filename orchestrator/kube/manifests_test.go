package kube

import (
	"bytes"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/ipa-serving/ipa/models"
	"github.com/ipa-serving/ipa/models/pipespec"
)

const testProfile = `{"version":1,"stages":[]}`

// builtin parses a built-in pipeline without the model repository (every
// built-in names its initial variants).
func builtinSpec(t *testing.T, name string) (*models.Pipeline, []byte) {
	t.Helper()
	src, err := pipespec.Builtin(name)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := pipespec.Parse(src, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return spec, src
}

func renderBuiltin(t *testing.T, name string, edit func(*ManifestOptions)) (*models.Pipeline, []Object) {
	t.Helper()
	spec, src := builtinSpec(t, name)
	opt := ManifestOptions{Namespace: "serving", Source: src, Profile: []byte(testProfile)}
	if edit != nil {
		edit(&opt)
	}
	objs, err := Render(spec, opt)
	if err != nil {
		t.Fatal(err)
	}
	return spec, objs
}

func objKey(o Object) string { return o.GetObjectKind().GroupVersionKind().Kind + "/" + o.GetName() }

func findObj[T Object](t *testing.T, objs []Object, kind, name string) T {
	t.Helper()
	for _, o := range objs {
		if objKey(o) == kind+"/"+name {
			v, ok := o.(T)
			if !ok {
				t.Fatalf("%s is a %T", objKey(o), o)
			}
			return v
		}
	}
	t.Fatalf("no %s/%s among %v", kind, name, objKeys(objs))
	panic("unreachable")
}

func objKeys(objs []Object) []string {
	var k []string
	for _, o := range objs {
		k = append(k, objKey(o))
	}
	return k
}

func TestManifestsRenderEveryObjectOfTheBuiltins(t *testing.T) {
	for _, tc := range []struct {
		pipeline string
		want     []string
	}{
		{"ocr", []string{
			"ConfigMap/ocr-pipeline", "NetworkPolicy/ocr-stages",
			"ServiceAccount/ocr-router", "Role/ocr-router", "RoleBinding/ocr-router",
			"ServiceAccount/ocr-controller", "Role/ocr-controller", "RoleBinding/ocr-controller",
			"Service/ocr-det", "Deployment/ocr-det", "PodDisruptionBudget/ocr-det",
			"Service/ocr-rec", "Deployment/ocr-rec", "PodDisruptionBudget/ocr-rec",
			"Service/ocr-router", "Deployment/ocr-router", "PodDisruptionBudget/ocr-router", "Deployment/ocr-controller"}},
		{"classify", []string{
			"ConfigMap/classify-pipeline", "NetworkPolicy/classify-stages",
			"ServiceAccount/classify-router", "Role/classify-router", "RoleBinding/classify-router",
			"ServiceAccount/classify-controller", "Role/classify-controller", "RoleBinding/classify-controller",
			"Service/classify-classify", "Deployment/classify-classify", "PodDisruptionBudget/classify-classify",
			"Service/classify-router", "Deployment/classify-router", "PodDisruptionBudget/classify-router", "Deployment/classify-controller"}},
	} {
		t.Run(tc.pipeline, func(t *testing.T) {
			_, objs := renderBuiltin(t, tc.pipeline, nil)
			if got := objKeys(objs); !slices.Equal(got, tc.want) {
				t.Fatalf("objects\n got %v\nwant %v", got, tc.want)
			}
			for _, o := range objs {
				if o.GetNamespace() != "serving" {
					t.Errorf("%s in namespace %q", objKey(o), o.GetNamespace())
				}
				// TypeMeta is set and is the one the API machinery knows
				// the Go type by: a typed or dynamic Create can send it.
				gvks, _, err := scheme.Scheme.ObjectKinds(o)
				if err != nil {
					t.Fatal(err)
				}
				if got := o.GetObjectKind().GroupVersionKind(); got != gvks[0] {
					t.Errorf("%s has TypeMeta %v, the scheme says %v", objKey(o), got, gvks[0])
				}
			}
		})
	}
}

func TestManifestsLabelsSelectThePodsOfTheirOwnComponent(t *testing.T) {
	spec, objs := renderBuiltin(t, "ocr", nil)
	for _, o := range objs {
		l := o.GetLabels()
		if l[LabelName] != "ipa" || l[LabelPipeline] != "ocr" {
			t.Errorf("%s labels %v lack %s=ipa, %s=ocr", objKey(o), l, LabelName, LabelPipeline)
		}
	}
	want := map[string]map[string]string{
		"ocr-router":     {LabelName: "ipa", LabelPipeline: "ocr", LabelComponent: "router"},
		"ocr-controller": {LabelName: "ipa", LabelPipeline: "ocr", LabelComponent: "controller"},
	}
	for _, s := range spec.Stages {
		want[StageName("ocr", s.Name)] = map[string]string{LabelName: "ipa", LabelPipeline: "ocr", LabelComponent: "stage", LabelStep: s.Name}
	}
	deps := map[string]*appsv1.Deployment{}
	for _, o := range objs {
		if d, ok := o.(*appsv1.Deployment); ok {
			deps[d.Name] = d
		}
	}
	if len(deps) != len(want) {
		t.Fatalf("deployments %v, want %v", slices.Sorted(maps.Keys(deps)), slices.Sorted(maps.Keys(want)))
	}
	for name, d := range deps {
		sel := d.Spec.Selector.MatchLabels
		if !maps.Equal(sel, want[name]) || len(d.Spec.Selector.MatchExpressions) > 0 {
			t.Errorf("deployment %s selects %v, want %v", name, sel, want[name])
		}
		for k, v := range sel {
			if d.Spec.Template.Labels[k] != v {
				t.Errorf("deployment %s: its pods' labels %v do not match its selector %v", name, d.Spec.Template.Labels, sel)
			}
		}
		if !maps.Equal(d.Labels, want[name]) {
			t.Errorf("deployment %s labelled %v, want %v", name, d.Labels, want[name])
		}
	}
	// Each Service selects the pods of exactly its own Deployment: the
	// other components' pods differ in a selected label.
	for _, o := range objs {
		svc, ok := o.(*corev1.Service)
		if !ok {
			continue
		}
		var selected []string
		for name, d := range deps {
			if selects(svc.Spec.Selector, d.Spec.Template.Labels) {
				selected = append(selected, name)
			}
		}
		if !slices.Equal(selected, []string{svc.Name}) {
			t.Errorf("service %s selects the pods of %v", svc.Name, selected)
		}
		if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Name != PortName || svc.Spec.Ports[0].Port != 8080 ||
			svc.Spec.Ports[0].TargetPort != intstr.FromString("http") {
			t.Errorf("service %s ports %+v, want http 8080 → http", svc.Name, svc.Spec.Ports)
		}
		if svc.Spec.Type != corev1.ServiceTypeClusterIP {
			t.Errorf("service %s is %s", svc.Name, svc.Spec.Type)
		}
	}
}

func selects(selector, labels map[string]string) bool {
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return len(selector) > 0
}

func TestManifestsStagePodRunsOneReplicaOfItsInitialConfiguration(t *testing.T) {
	spec, src := builtinSpec(t, "ocr")
	spec.Stages[1].Initial.Cores, spec.Stages[1].Initial.Replicas = 2, 3
	objs, err := Render(spec, ManifestOptions{Source: src, Profile: []byte(testProfile),
		StageMemory: map[string]resource.Quantity{"det": resource.MustParse("3Gi")}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		step              string
		args              []string
		replicas, cores   int64
		memory            string
		annotationPresent bool
	}{
		{"det", []string{"stage", "--stage", "ocr-det", "--models.dir", "/models", "--http.listen-addr", "0.0.0.0:8080",
			"--variant", "det-640", "--replicas", "1", "--cores", "1", "--batch.max-batch", "1", "--batch.max-wait", "2ms",
			"--admin.await-config", "30s", "--shutdown.grace-period", "20s", "--shutdown.linger", "1s"}, 1, 1, "3Gi", false},
		{"rec", []string{"stage", "--stage", "ocr-rec", "--models.dir", "/models", "--http.listen-addr", "0.0.0.0:8080",
			"--variant", "rec-v4", "--replicas", "1", "--cores", "2", "--batch.max-batch", "8", "--batch.max-wait", "5ms",
			"--admin.await-config", "30s", "--shutdown.grace-period", "20s", "--shutdown.linger", "1s"}, 3, 2, DefaultStageMemory, false},
	} {
		d := findObj[*appsv1.Deployment](t, objs, "Deployment", "ocr-"+tc.step)
		if d.Namespace != "default" {
			t.Errorf("namespace %q, want the default", d.Namespace)
		}
		switch {
		case tc.replicas == 1 && d.Spec.Replicas != nil:
			t.Errorf("%s: replicas %d rendered; one replica is left to the default so that a re-apply keeps the controller's scale", tc.step, *d.Spec.Replicas)
		case tc.replicas != 1 && (d.Spec.Replicas == nil || *d.Spec.Replicas != int32(tc.replicas)):
			t.Errorf("%s: replicas %v, want %d", tc.step, d.Spec.Replicas, tc.replicas)
		}
		ps := d.Spec.Template.Spec
		if len(ps.Containers) != 1 {
			t.Fatalf("%s: %d containers", tc.step, len(ps.Containers))
		}
		c := ps.Containers[0]
		if c.Name != ContainerName || c.Image != DefaultImage || c.ImagePullPolicy != corev1.PullIfNotPresent {
			t.Errorf("%s: container %q image %q pull %q", tc.step, c.Name, c.Image, c.ImagePullPolicy)
		}
		if !slices.Equal(c.Args, tc.args) {
			t.Errorf("%s args\n got %q\nwant %q", tc.step, c.Args, tc.args)
		}
		if len(c.Command) != 0 {
			t.Errorf("%s: command %q overrides the image's entrypoint", tc.step, c.Command)
		}
		cpu := resource.NewQuantity(tc.cores, resource.DecimalSI)
		if req, lim := c.Resources.Requests[corev1.ResourceCPU], c.Resources.Limits[corev1.ResourceCPU]; req.Cmp(*cpu) != 0 || lim.Cmp(*cpu) != 0 {
			t.Errorf("%s: cpu request %s limit %s, want both %s", tc.step, req.String(), lim.String(), cpu)
		}
		if mem := c.Resources.Requests[corev1.ResourceMemory]; mem.Cmp(resource.MustParse(tc.memory)) != 0 {
			t.Errorf("%s: memory request %s, want %s", tc.step, mem.String(), tc.memory)
		}
		if mem, lim := c.Resources.Requests[corev1.ResourceMemory], c.Resources.Limits[corev1.ResourceMemory]; lim.Cmp(StageMemoryLimit(mem)) != 0 || lim.Cmp(mem) <= 0 {
			want := StageMemoryLimit(mem)
			t.Errorf("%s: memory limit %s for a request of %s, want StageMemoryLimit's %s", tc.step, lim.String(), mem.String(), want.String())
		}
		if len(c.Ports) != 1 || c.Ports[0].Name != "http" || c.Ports[0].ContainerPort != 8080 {
			t.Errorf("%s: ports %+v", tc.step, c.Ports)
		}
		checkProbe(t, tc.step+" readiness", c.ReadinessProbe, "/v2/health/ready")
		checkProbe(t, tc.step+" liveness", c.LivenessProbe, "/v2/health/live")
		checkProbe(t, tc.step+" startup", c.StartupProbe, "/v2/health/live")
		if budget := c.StartupProbe.PeriodSeconds * c.StartupProbe.FailureThreshold; budget < 120 {
			t.Errorf("%s: the startup probe gives model loading %d s", tc.step, budget)
		}
		if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil || c.Lifecycle.PreStop.Sleep.Seconds != 5 {
			t.Errorf("%s: preStop %+v, want sleep 5 s", tc.step, c.Lifecycle)
		} else if g := *ps.TerminationGracePeriodSeconds; g < 5+1+20+2 || g > 60 {
			// preStop, then --shutdown.linger, --shutdown.grace-period and the
			// 2 s in which what is left is answered, before SIGKILL.
			t.Errorf("%s: terminationGracePeriodSeconds %d, want above preStop 5 s + linger 1 s + grace period 20 s + 2 s", tc.step, g)
		}
		if ps.AutomountServiceAccountToken == nil || *ps.AutomountServiceAccountToken || ps.ServiceAccountName != "" {
			t.Errorf("%s: a stage pod must not get an API token (automount %v, account %q)", tc.step, ps.AutomountServiceAccountToken, ps.ServiceAccountName)
		}
		checkSecurity(t, tc.step, ps)
		checkTokenEnv(t, tc.step, c, AdminTokenName("ocr"))
		if _, ok := d.Spec.Template.Annotations[AnnotationTokenSHA256]; ok != tc.annotationPresent {
			t.Errorf("%s: token digest annotation present = %v", tc.step, ok)
		}
		// The model repository is the image's: no volume at /models.
		for _, m := range c.VolumeMounts {
			if m.MountPath == ModelsDir {
				t.Errorf("%s mounts %s without --models-volume", tc.step, ModelsDir)
			}
		}
	}
}

func checkProbe(t *testing.T, what string, p *corev1.Probe, path string) {
	t.Helper()
	if p == nil || p.HTTPGet == nil {
		t.Errorf("%s: probe %+v, want GET %s", what, p, path)
		return
	}
	if p.HTTPGet.Path != path || p.HTTPGet.Port != intstr.FromString("http") {
		t.Errorf("%s: probe GET %s on %v, want %s on the port named http", what, p.HTTPGet.Path, p.HTTPGet.Port.String(), path)
	}
	if p.PeriodSeconds <= 0 || p.TimeoutSeconds <= 0 || p.FailureThreshold <= 0 {
		t.Errorf("%s: probe timings %+v", what, p)
	}
}

func checkSecurity(t *testing.T, what string, ps corev1.PodSpec) {
	t.Helper()
	psc := ps.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser != 65532 {
		t.Errorf("%s: pod security context %+v", what, psc)
	}
	for _, c := range ps.Containers {
		sc := c.SecurityContext
		switch {
		case sc == nil:
			t.Errorf("%s: container %s has no security context", what, c.Name)
		case sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot, sc.RunAsUser == nil || *sc.RunAsUser != 65532:
			t.Errorf("%s: container runs as %v (non-root %v), want 65532", what, sc.RunAsUser, sc.RunAsNonRoot)
		case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
			t.Errorf("%s: root filesystem is writable", what)
		case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
			t.Errorf("%s: privilege escalation allowed", what)
		case sc.Privileged != nil && *sc.Privileged:
			t.Errorf("%s: privileged", what)
		case sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0:
			t.Errorf("%s: capabilities %+v, want drop ALL", what, sc.Capabilities)
		}
	}
}

func checkTokenEnv(t *testing.T, what string, c corev1.Container, secret string) {
	t.Helper()
	for _, e := range c.Env {
		if e.Name == "IPA_ADMIN_TOKEN" {
			if e.Value != "" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil ||
				e.ValueFrom.SecretKeyRef.Name != secret || e.ValueFrom.SecretKeyRef.Key != TokenKey {
				t.Errorf("%s: IPA_ADMIN_TOKEN %+v, want key %q of Secret %q", what, e, TokenKey, secret)
			}
			return
		}
	}
	t.Errorf("%s: no IPA_ADMIN_TOKEN in %+v", what, c.Env)
}

func envFieldRef(c corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			return e.ValueFrom.FieldRef.FieldPath
		}
	}
	return ""
}

func TestManifestsRouterAndController(t *testing.T) {
	_, objs := renderBuiltin(t, "ocr", func(o *ManifestOptions) { o.RouterServiceType = corev1.ServiceTypeLoadBalancer; o.Image = "reg/ipa:1" })
	router := findObj[*appsv1.Deployment](t, objs, "Deployment", "ocr-router")
	rc := router.Spec.Template.Spec.Containers[0]
	if want := []string{"router", "--pipeline", "/etc/ipa/pipeline.yaml", "--models.dir", "/models", "--http.listen-addr", "0.0.0.0:8080",
		"--kube.discover", "--kube.namespace", "$(POD_NAMESPACE)", "--shutdown.grace-period", "20s", "--shutdown.linger", "1s"}; !slices.Equal(rc.Args, want) {
		t.Errorf("router args\n got %q\nwant %q", rc.Args, want)
	}
	if *router.Spec.Replicas != 1 {
		t.Errorf("router replicas %d: the controller reads the rate of one router", *router.Spec.Replicas)
	}
	if rc.Image != "reg/ipa:1" {
		t.Errorf("router image %q", rc.Image)
	}
	checkProbe(t, "router readiness", rc.ReadinessProbe, "/v2/health/ready")
	checkProbe(t, "router liveness", rc.LivenessProbe, "/v2/health/live")
	checkSecurity(t, "router", router.Spec.Template.Spec)
	if router.Spec.Template.Spec.ServiceAccountName != "ocr-router" {
		t.Errorf("router runs as %q", router.Spec.Template.Spec.ServiceAccountName)
	}
	if svc := findObj[*corev1.Service](t, objs, "Service", "ocr-router"); svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
		t.Errorf("router service type %s", svc.Spec.Type)
	}
	if svc := findObj[*corev1.Service](t, objs, "Service", "ocr-det"); svc.Spec.Type != corev1.ServiceTypeClusterIP {
		t.Errorf("a stage's service type %s follows the router's", svc.Spec.Type)
	}

	ctl := findObj[*appsv1.Deployment](t, objs, "Deployment", "ocr-controller")
	cc := ctl.Spec.Template.Spec.Containers[0]
	if want := []string{"controller", "--pipeline", "/etc/ipa/pipeline.yaml", "--models.dir", "/models", "--router", "http://ocr-router:8080",
		"--kube", "--kube.namespace", "$(POD_NAMESPACE)", "--controller.profile", "/etc/ipa/profile.json", "--http.listen-addr", "0.0.0.0:8080"}; !slices.Equal(cc.Args, want) {
		t.Errorf("controller args\n got %q\nwant %q", cc.Args, want)
	}
	if *ctl.Spec.Replicas != 1 || ctl.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		t.Errorf("controller: %d replicas, strategy %q; want 1, Recreate", *ctl.Spec.Replicas, ctl.Spec.Strategy.Type)
	}
	if ctl.Spec.Template.Spec.ServiceAccountName != "ocr-controller" {
		t.Errorf("controller runs as %q", ctl.Spec.Template.Spec.ServiceAccountName)
	}
	checkProbe(t, "controller liveness", cc.LivenessProbe, "/healthz")
	checkProbe(t, "controller startup", cc.StartupProbe, "/healthz")
	checkSecurity(t, "controller", ctl.Spec.Template.Spec)
	checkTokenEnv(t, "controller", cc, "ocr-admin-token")

	// $(POD_NAMESPACE) in the args expands only if the container defines it.
	for _, c := range []corev1.Container{rc, cc} {
		if got := envFieldRef(c, "POD_NAMESPACE"); got != "metadata.namespace" {
			t.Errorf("%v: POD_NAMESPACE from %q", c.Args[0], got)
		}
	}
	// The files named in the args are where the ConfigMap is mounted.
	cm := findObj[*corev1.ConfigMap](t, objs, "ConfigMap", "ocr-pipeline")
	for _, d := range []*appsv1.Deployment{router, ctl} {
		c := d.Spec.Template.Spec.Containers[0]
		for i, a := range c.Args {
			if !strings.HasPrefix(a, ConfigDir+"/") {
				continue
			}
			if !mountsConfigKey(d.Spec.Template.Spec, c, cm.Name, strings.TrimPrefix(a, ConfigDir+"/")) {
				t.Errorf("%s: %s %s is not a key of ConfigMap %s mounted at %s", d.Name, c.Args[i-1], a, cm.Name, ConfigDir)
			}
		}
		if d.Spec.Template.Annotations[AnnotationPipelineSHA256] == "" {
			t.Errorf("%s: no digest of the ConfigMap on its pods", d.Name)
		}
	}
}

// mountsConfigKey tells whether container c of pod ps sees key of ConfigMap
// cm as ConfigDir/key.
func mountsConfigKey(ps corev1.PodSpec, c corev1.Container, cm, key string) bool {
	for _, m := range c.VolumeMounts {
		if m.MountPath != ConfigDir {
			continue
		}
		for _, v := range ps.Volumes {
			if v.Name != m.Name || v.ConfigMap == nil || v.ConfigMap.Name != cm {
				continue
			}
			if len(v.ConfigMap.Items) == 0 {
				return true
			}
			for _, it := range v.ConfigMap.Items {
				if it.Key == key && it.Path == key {
					return true
				}
			}
		}
	}
	return false
}

// grants expands rules into "group/resource[names] verb" entries.
func grants(rules []rbacv1.PolicyRule) []string {
	var out []string
	for _, r := range rules {
		names := ""
		if len(r.ResourceNames) > 0 {
			names = "[" + strings.Join(slices.Sorted(slices.Values(r.ResourceNames)), ",") + "]"
		}
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					out = append(out, fmt.Sprintf("%s/%s%s %s", g, res, names, v))
				}
			}
		}
		for _, u := range r.NonResourceURLs {
			for _, v := range r.Verbs {
				out = append(out, fmt.Sprintf("url %s %s", u, v))
			}
		}
	}
	sort.Strings(out)
	return slices.Compact(out)
}

// checkRules reports rules that grant anything else than want.
func checkRules(rules []rbacv1.PolicyRule, want []string) error {
	sort.Strings(want)
	if got := grants(rules); !slices.Equal(got, want) {
		return fmt.Errorf("grants\n got %q\nwant %q", got, want)
	}
	return nil
}

func TestManifestsRBACGrantsExactlyWhatEachRoleUses(t *testing.T) {
	_, objs := renderBuiltin(t, "ocr", nil)
	routerWant := []string{"discovery.k8s.io/endpointslices list", "discovery.k8s.io/endpointslices watch"}
	controllerWant := []string{
		"apps/deployments[ocr-det,ocr-rec] get", "apps/deployments[ocr-det,ocr-rec] patch",
		"apps/deployments list", "apps/deployments watch",
		"apps/deployments/scale[ocr-det,ocr-rec] get", "apps/deployments/scale[ocr-det,ocr-rec] update",
		"discovery.k8s.io/endpointslices list", "discovery.k8s.io/endpointslices watch",
	}
	router := findObj[*rbacv1.Role](t, objs, "Role", "ocr-router")
	controller := findObj[*rbacv1.Role](t, objs, "Role", "ocr-controller")
	if err := checkRules(router.Rules, routerWant); err != nil {
		t.Errorf("router: %v", err)
	}
	if err := checkRules(controller.Rules, controllerWant); err != nil {
		t.Errorf("controller: %v", err)
	}
	// The check catches a broader grant.
	for name, broader := range map[string]rbacv1.PolicyRule{
		"another verb":       {APIGroups: []string{"apps"}, Resources: []string{"deployments"}, Verbs: []string{"delete"}},
		"a wildcard verb":    {APIGroups: []string{"apps"}, Resources: []string{"deployments"}, Verbs: []string{"*"}},
		"another resource":   {APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"list"}},
		"patch without name": {APIGroups: []string{"apps"}, Resources: []string{"deployments"}, Verbs: []string{"patch"}},
	} {
		rules := append(slices.Clone(controller.Rules), broader)
		if checkRules(rules, controllerWant) == nil {
			t.Errorf("a controller Role with %s passes the check", name)
		}
	}
	for _, name := range []string{"ocr-router", "ocr-controller"} {
		rb := findObj[*rbacv1.RoleBinding](t, objs, "RoleBinding", name)
		sa := findObj[*corev1.ServiceAccount](t, objs, "ServiceAccount", name)
		want := rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: name}
		if rb.RoleRef != want || len(rb.Subjects) != 1 || rb.Subjects[0] != (rbacv1.Subject{Kind: "ServiceAccount", Name: sa.Name, Namespace: "serving"}) {
			t.Errorf("%s binds %+v to %+v", name, rb.RoleRef, rb.Subjects)
		}
	}
}

// splitYAML splits a multi-document stream written by WriteYAML.
func splitYAML(t *testing.T, b []byte) [][]byte {
	t.Helper()
	if !bytes.HasPrefix(b, []byte("---\n")) {
		t.Fatalf("the stream does not start with ---: %.40q", b)
	}
	return bytes.Split(b[4:], []byte("\n---\n"))
}

func TestManifestsYAMLRoundTripsThroughTheAPIScheme(t *testing.T) {
	for _, name := range []string{"ocr", "classify"} {
		t.Run(name, func(t *testing.T) {
			_, objs := renderBuiltin(t, name, func(o *ManifestOptions) { o.ModelsVolume = "models" })
			var buf bytes.Buffer
			if err := WriteYAML(&buf, objs); err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(buf.Bytes(), []byte("status:")) || bytes.Contains(buf.Bytes(), []byte("creationTimestamp")) {
				t.Errorf("the YAML carries empty status or timestamps:\n%s", buf.String())
			}
			docs := splitYAML(t, buf.Bytes())
			if len(docs) != len(objs) {
				t.Fatalf("%d documents for %d objects", len(docs), len(objs))
			}
			dec := scheme.Codecs.UniversalDeserializer()
			for i, doc := range docs {
				got, gvk, err := dec.Decode(doc, nil, nil)
				if err != nil {
					t.Fatalf("document %d (%s): %v\n%s", i, objKey(objs[i]), err, doc)
				}
				if gvk.Kind != objs[i].GetObjectKind().GroupVersionKind().Kind {
					t.Errorf("document %d decodes as %v, want %s", i, gvk, objKey(objs[i]))
				}
				if !apiequality.Semantic.DeepEqual(got, objs[i]) {
					t.Errorf("%s does not round-trip:\n%s", objKey(objs[i]), doc)
				}
			}
			// The ConfigMap holds the spec as given and the profile.
			cm := findObj[*corev1.ConfigMap](t, objs, "ConfigMap", name+"-pipeline")
			src, _ := pipespec.Builtin(name)
			if cm.Data[PipelineKey] != string(src) || cm.Data[ProfileKey] != testProfile {
				t.Errorf("configmap data %q", cm.Data)
			}
		})
	}
}

// The admin token is never made up by a render: re-rendering and
// re-applying cannot rotate it under running pods. By default the pods
// read a Secret created once; a token given is rendered as that Secret,
// the same each time, with a digest on the pods that changes with it.
func TestManifestsAdminTokenIsStableAcrossRenders(t *testing.T) {
	_, a := renderBuiltin(t, "classify", nil)
	_, b := renderBuiltin(t, "classify", nil)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("two renders of the same options differ")
	}
	readsUnrenderedSecret(t, a, "classify-admin-token")
	if cmd := AdminTokenCommand("serving", "classify"); !strings.Contains(cmd, "kubectl -n serving create secret generic classify-admin-token --from-literal=token=") ||
		!strings.Contains(cmd, "/dev/urandom") {
		t.Errorf("AdminTokenCommand: %s", cmd)
	}

	token := []byte("0123456789abcdef0123456789abcdef")
	withToken := func(tok []byte) []Object {
		_, objs := renderBuiltin(t, "classify", func(o *ManifestOptions) { o.AdminToken = tok })
		return objs
	}
	c, d := withToken(token), withToken(slices.Clone(token))
	if !reflect.DeepEqual(c, d) {
		t.Fatal("two renders with the same token differ")
	}
	sc := findObj[*corev1.Secret](t, c, "Secret", "classify-admin-token")
	if !bytes.Equal(sc.Data[TokenKey], token) {
		t.Errorf("token %q, want the one given", sc.Data[TokenKey])
	}
	other := withToken([]byte("fedcba9876543210fedcba9876543210"))
	for _, name := range []string{"classify-classify", "classify-controller"} {
		sum := findObj[*appsv1.Deployment](t, c, "Deployment", name).Spec.Template.Annotations[AnnotationTokenSHA256]
		if sum == "" || sum == findObj[*appsv1.Deployment](t, other, "Deployment", name).Spec.Template.Annotations[AnnotationTokenSHA256] {
			t.Errorf("%s: token digest %q, want one that changes with the token", name, sum)
		}
	}

	_, objs := renderBuiltin(t, "classify", func(o *ManifestOptions) { o.AdminTokenSecret = "shared-token" })
	readsUnrenderedSecret(t, objs, "shared-token")
}

// readsUnrenderedSecret checks that the classify pipeline's objs hold no
// Secret and that its stage and controller read the token from secret,
// with no token digest on their pods.
func readsUnrenderedSecret(t *testing.T, objs []Object, secret string) {
	t.Helper()
	for _, o := range objs {
		if _, ok := o.(*corev1.Secret); ok {
			t.Errorf("rendered %s: the token's Secret is not the render's", objKey(o))
		}
	}
	for _, name := range []string{"classify-classify", "classify-controller"} {
		d := findObj[*appsv1.Deployment](t, objs, "Deployment", name)
		checkTokenEnv(t, name, d.Spec.Template.Spec.Containers[0], secret)
		if _, ok := d.Spec.Template.Annotations[AnnotationTokenSHA256]; ok {
			t.Errorf("%s: a token digest without a rendered token", name)
		}
	}
}

// Only the pipeline's router and controller reach its stage pods; every
// stage and the router may lose one pod at a time to a drain.
func TestManifestsNetworkPolicyAndDisruptionBudgets(t *testing.T) {
	spec, objs := renderBuiltin(t, "ocr", nil)
	np := findObj[*networkingv1.NetworkPolicy](t, objs, "NetworkPolicy", "ocr-stages")
	stageLabels := map[string]string{LabelName: "ipa", LabelPipeline: "ocr", LabelComponent: "stage"}
	if !maps.Equal(np.Spec.PodSelector.MatchLabels, stageLabels) || !slices.Equal(np.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}) {
		t.Errorf("policy selects %v for %v", np.Spec.PodSelector.MatchLabels, np.Spec.PolicyTypes)
	}
	if len(np.Spec.Ingress) != 1 {
		t.Fatalf("ingress rules %+v", np.Spec.Ingress)
	}
	rule := np.Spec.Ingress[0]
	var from []string
	for _, p := range rule.From {
		if p.NamespaceSelector != nil || p.IPBlock != nil || p.PodSelector == nil || p.PodSelector.MatchLabels[LabelPipeline] != "ocr" {
			t.Errorf("peer %+v: want pods of this pipeline in this namespace only", p)
			continue
		}
		from = append(from, p.PodSelector.MatchLabels[LabelComponent])
	}
	if !slices.Equal(from, []string{"router", "controller"}) {
		t.Errorf("stage pods accept traffic from %v, want the router and the controller", from)
	}
	if len(rule.Ports) != 1 || rule.Ports[0].Port.String() != PortName || *rule.Ports[0].Protocol != corev1.ProtocolTCP {
		t.Errorf("ports %+v, want the http port", rule.Ports)
	}
	// Every stage pod is selected, no router or controller pod is.
	for _, o := range objs {
		if d, ok := o.(*appsv1.Deployment); ok {
			selected := labelsMatch(np.Spec.PodSelector.MatchLabels, d.Spec.Template.Labels)
			if stage := d.Spec.Template.Labels[LabelComponent] == "stage"; selected != stage {
				t.Errorf("%s: selected by the stage policy: %v", d.Name, selected)
			}
		}
	}
	for _, name := range append(stepDeployments(spec), "ocr-router") {
		pdb := findObj[*policyv1.PodDisruptionBudget](t, objs, "PodDisruptionBudget", name)
		d := findObj[*appsv1.Deployment](t, objs, "Deployment", name)
		if !maps.Equal(pdb.Spec.Selector.MatchLabels, d.Spec.Selector.MatchLabels) {
			t.Errorf("%s: budget selects %v, the Deployment %v", name, pdb.Spec.Selector.MatchLabels, d.Spec.Selector.MatchLabels)
		}
		if pdb.Spec.MinAvailable != nil || pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 ||
			pdb.Spec.UnhealthyPodEvictionPolicy == nil || *pdb.Spec.UnhealthyPodEvictionPolicy != policyv1.AlwaysAllow {
			t.Errorf("%s: budget %+v, want maxUnavailable 1 and unhealthy pods always evictable", name, pdb.Spec)
		}
	}
}

func labelsMatch(selector, labels map[string]string) bool {
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func stepDeployments(spec *models.Pipeline) []string {
	var out []string
	for _, s := range spec.Stages {
		out = append(out, StageName(spec.Name, s.Name))
	}
	return out
}

func TestStageMemoryLimitLeavesRoomAboveTheRequest(t *testing.T) {
	f := func(request, want string) {
		t.Helper()
		if got := StageMemoryLimit(resource.MustParse(request)); got.Cmp(resource.MustParse(want)) != 0 {
			t.Errorf("StageMemoryLimit(%s) = %s, want %s", request, got.String(), want)
		}
	}
	f("512Mi", "768Mi") // at least 256Mi
	f("1Gi", "1280Mi")  // a quarter is 256Mi
	f("4Gi", "5Gi")     // a quarter
}

func TestManifestsModelsVolumeIsMountedReadOnlyEverywhere(t *testing.T) {
	_, objs := renderBuiltin(t, "ocr", func(o *ManifestOptions) { o.ModelsVolume = "ipa-models" })
	n := 0
	for _, o := range objs {
		d, ok := o.(*appsv1.Deployment)
		if !ok {
			continue
		}
		n++
		ps := d.Spec.Template.Spec
		var mount *corev1.VolumeMount
		for i, m := range ps.Containers[0].VolumeMounts {
			if m.MountPath == "/models" {
				mount = &ps.Containers[0].VolumeMounts[i]
			}
		}
		if mount == nil || !mount.ReadOnly {
			t.Errorf("%s: /models mount %+v, want read-only", d.Name, mount)
			continue
		}
		i := slices.IndexFunc(ps.Volumes, func(v corev1.Volume) bool { return v.Name == mount.Name })
		if i < 0 || ps.Volumes[i].PersistentVolumeClaim == nil || ps.Volumes[i].PersistentVolumeClaim.ClaimName != "ipa-models" ||
			!ps.Volumes[i].PersistentVolumeClaim.ReadOnly {
			t.Errorf("%s: /models is not the read-only claim ipa-models: %+v", d.Name, ps.Volumes)
		}
	}
	if n != 4 {
		t.Errorf("%d deployments", n)
	}
}

func TestManifestsRefuseWhatCannotRun(t *testing.T) {
	spec, src := builtinSpec(t, "ocr")
	ok := ManifestOptions{Source: src, Profile: []byte(testProfile)}
	for _, tc := range []struct {
		name string
		spec func(*models.Pipeline)
		opt  func(*ManifestOptions)
		want string
	}{
		{name: "no profile", opt: func(o *ManifestOptions) { o.Profile = nil }, want: "--profile"},
		{name: "profile not JSON", opt: func(o *ManifestOptions) { o.Profile = []byte("stages: []") }, want: "not JSON"},
		{name: "no source", opt: func(o *ManifestOptions) { o.Source = nil }, want: "source text"},
		{name: "another pipeline's source", opt: func(o *ManifestOptions) { o.Source, _ = pipespec.Builtin("faces") }, want: `"faces"`},
		{name: "bad namespace", opt: func(o *ManifestOptions) { o.Namespace = "Prod_1" }, want: `namespace "Prod_1"`},
		{name: "memory of no step", opt: func(o *ManifestOptions) {
			o.StageMemory = map[string]resource.Quantity{"classify": resource.MustParse("1Gi")}
		}, want: `step "classify"`},
		{name: "service type", opt: func(o *ManifestOptions) { o.RouterServiceType = "ExternalName" }, want: "ExternalName"},
		{name: "bad PVC name", opt: func(o *ManifestOptions) { o.ModelsVolume = "My Models" }, want: "PersistentVolumeClaim"},
		{name: "step name", spec: func(p *models.Pipeline) { p.Stages[0].Name = "det_1" }, want: `step "det_1"`},
		{name: "step collides with the router", spec: func(p *models.Pipeline) { p.Stages[1].Name = "router" }, want: "collides"},
		{name: "unvalidated spec", spec: func(p *models.Pipeline) { p.Stages[0].Initial = models.StageConfig{} }, want: "initial configuration"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := *spec
			s.Stages = slices.Clone(spec.Stages)
			o := ok
			if tc.spec != nil {
				tc.spec(&s)
			}
			if tc.opt != nil {
				tc.opt(&o)
			}
			_, err := Render(&s, o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
	if _, err := Render(spec, ok); err != nil {
		t.Fatalf("the valid case fails: %v", err)
	}
}

func TestManifestsAwaitConfig(t *testing.T) {
	for _, tc := range []struct {
		in   time.Duration
		want string
	}{{0, "30s"}, {90 * time.Second, "1m30s"}, {-1, "0s"}} {
		_, objs := renderBuiltin(t, "classify", func(o *ManifestOptions) { o.AwaitConfig = tc.in })
		args := findObj[*appsv1.Deployment](t, objs, "Deployment", "classify-classify").Spec.Template.Spec.Containers[0].Args
		i := slices.Index(args, "--admin.await-config")
		if i < 0 || i+1 >= len(args) || args[i+1] != tc.want {
			t.Errorf("AwaitConfig %v: args %q, want --admin.await-config %s", tc.in, args, tc.want)
		}
	}
}

// The objects are independent values: changing one rendering does not
// change another (the harness may mutate them before Create).
func TestManifestsRenderingsShareNothing(t *testing.T) {
	_, a := renderBuiltin(t, "ocr", nil)
	_, b := renderBuiltin(t, "ocr", nil)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("two renderings of the same options differ")
	}
	d := findObj[*appsv1.Deployment](t, a, "Deployment", "ocr-det")
	d.Spec.Template.Labels["x"] = "y"
	if _, ok := findObj[*appsv1.Deployment](t, b, "Deployment", "ocr-det").Spec.Template.Labels["x"]; ok {
		t.Fatal("renderings share maps")
	}
	if _, ok := d.Spec.Selector.MatchLabels["x"]; ok {
		t.Fatal("a Deployment's pod labels and selector are one map")
	}
	if _, ok := d.Labels["x"]; ok {
		t.Fatal("a Deployment's labels and its pods' are one map")
	}
	svc := findObj[*corev1.Service](t, a, "Service", "ocr-det")
	svc.Labels["x"] = "y"
	if _, ok := svc.Spec.Selector["x"]; ok {
		t.Fatal("a Service's labels and selector are one map")
	}
}

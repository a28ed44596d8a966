package kube

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"

	"github.com/ipa-serving/ipa/models"
	"github.com/ipa-serving/ipa/models/pipespec"
)

// What the rendered objects agree on besides names.go: the ConfigMap's keys
// and where it is mounted, the Secret's key, where the model repository is,
// and the user every container runs as.
const (
	PipelineKey = "pipeline.yaml" // the spec's source text, in the ConfigMap
	ProfileKey  = "profile.json"  // the controller's profile, in the ConfigMap
	ConfigDir   = "/etc/ipa"      // where router and controller mount the ConfigMap
	ModelsDir   = "/models"       // the model repository in every pod (baked in the image, or a PVC)
	TokenKey    = "token"         // the admin token's key in its Secret

	// RunAsUser is the uid and gid of every container (the image's USER).
	RunAsUser = 65532

	// AnnotationPipelineSHA256 on the router's and controller's pod
	// templates is the digest of the ConfigMap they read at start, so that
	// re-applying a changed spec or profile restarts them.
	AnnotationPipelineSHA256 = "ipa-serving.io/pipeline-sha256"
	// AnnotationTokenSHA256 on the stages' and controller's pod templates is
	// the digest of a rendered admin token (ManifestOptions.AdminToken): a
	// render with another token restarts every pod that reads it, so none
	// keeps a stale one; a render with the same token changes nothing.
	AnnotationTokenSHA256 = "ipa-serving.io/admin-token-sha256"
)

// Defaults of ManifestOptions.
const (
	DefaultNamespace   = "default"
	DefaultImage       = "ipa:latest"
	DefaultAwaitConfig = 30 * time.Second
	// DefaultStageMemory is the memory request of a stage pod whose step
	// ManifestOptions.StageMemory does not size. `ipa manifests` sizes every
	// step by the memory model (one replica at the largest profiled batch:
	// ocr-det 2.2 GB, classify 2.6 GB; README "Memory").
	DefaultStageMemory = "1Gi"
	// MinMemoryAllowance is the least room a stage pod's memory limit leaves
	// above its request; see StageMemoryLimit.
	MinMemoryAllowance = "256Mi"
)

// StageMemoryLimit returns the memory limit of a stage pod that requests
// request: request plus a quarter of it (rounded up to MiB), at least
// MinMemoryAllowance, for what the memory model does not count: requests
// in flight and queued (each up to the stage's --http.max-body-size) and
// the allocator's slack.
// A pod that passes it is killed and restarted rather than take the node's
// memory.
func StageMemoryLimit(request resource.Quantity) resource.Quantity {
	allowance := resource.MustParse(MinMemoryAllowance)
	const mi = 1 << 20
	if q := (request.Value()/4 + mi - 1) / mi * mi; q > allowance.Value() {
		allowance = *resource.NewQuantity(q, resource.BinarySI)
	}
	limit := request.DeepCopy()
	limit.Add(allowance)
	return *resource.NewQuantity(limit.Value(), resource.BinarySI)
}

// AdminTokenCommand returns the command that creates, once, the admin
// token Secret the rendered pods read when Render renders none: a random
// token from the shell, never shown.
func AdminTokenCommand(namespace, pipeline string) string {
	return fmt.Sprintf(`kubectl -n %s create secret generic %s --from-literal=%s="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"`,
		namespace, AdminTokenName(pipeline), TokenKey)
}

// PipelineConfigName names the ConfigMap holding the spec and the profile.
func PipelineConfigName(pipeline string) string { return pipeline + "-pipeline" }

// AdminTokenName names the Secret holding the stages' admin token.
func AdminTokenName(pipeline string) string { return pipeline + "-admin-token" }

// Object is what Render returns: a typed API object whose TypeMeta is set,
// ready for a typed or dynamic client's Create (controller-runtime's
// client.Object, without the dependency).
type Object interface {
	metav1.Object
	runtime.Object
}

// ManifestOptions say how to run a pipeline on Kubernetes. Source and
// Profile are required; the rest has defaults.
type ManifestOptions struct {
	// Namespace of every object (default "default").
	Namespace string
	// Image of every container (default ipa:latest) and its pull policy
	// (default IfNotPresent, so that an image loaded into the nodes works).
	Image           string
	ImagePullPolicy corev1.PullPolicy
	// Source is the pipeline spec's YAML text as given (the router and the
	// controller parse it again); it must describe spec.
	Source []byte
	// Profile is the profile file (JSON) the controller solves with.
	Profile []byte
	// ModelsVolume names a PersistentVolumeClaim holding the model
	// repository, mounted read-only at /models; empty: the image's /models.
	ModelsVolume string
	// AdminTokenSecret names an existing Secret whose key "token" is the
	// admin token; empty: the Secret AdminTokenName(pipeline).
	AdminTokenSecret string
	// AdminToken, when set, is rendered as the Secret AdminTokenName(pipeline)
	// (e.g. the content of ipa manifests --admin-token-file). When empty the
	// Secret is referenced, not rendered: create it once
	// (AdminTokenCommand), and every later render and re-apply leaves it,
	// and the pods that read it, alone.
	AdminToken []byte
	// RouterServiceType is the router Service's type (default ClusterIP).
	RouterServiceType corev1.ServiceType
	// StageMemory is the memory request of a step's pods, by step name
	// (default DefaultStageMemory); the limit is StageMemoryLimit of it.
	StageMemory map[string]resource.Quantity
	// AwaitConfig is each stage's --admin.await-config: how long a new pod waits
	// for the controller's plan before it reports ready anyway (default 30s;
	// a negative value renders 0s, ready as soon as loaded).
	AwaitConfig time.Duration
}

// Render returns every object that runs spec on Kubernetes, in an order
// kubectl apply can create them in: the ConfigMap, the admin token Secret
// (only with opt.AdminToken), the NetworkPolicy of the stage pods, the
// router's and controller's ServiceAccounts, Roles and RoleBindings, then
// per step a Service, a Deployment and a PodDisruptionBudget, then the
// router's Service, Deployment and PodDisruptionBudget and the
// controller's Deployment. The same spec and options render the same
// objects.
//
// Each stage pod is one replica of its step (--replicas 1, cpu = the step's
// initial cores); the controller scales the step's Deployment. spec must be
// validated (pipespec.Parse, which fills every step's initial
// configuration).
func Render(spec *models.Pipeline, opt ManifestOptions) ([]Object, error) {
	if err := opt.defaults(spec); err != nil {
		return nil, err
	}
	r := renderer{spec: spec, opt: opt}
	objs := []Object{r.configMap()}
	if len(opt.AdminToken) > 0 {
		objs = append(objs, r.secret(opt.AdminToken))
		r.tokenSum = sha256Hex(opt.AdminToken)
	}
	objs = append(objs, r.stageNetworkPolicy())
	objs = append(objs, r.rbac(RouterName(spec.Name), "router", r.routerRules())...)
	objs = append(objs, r.rbac(ControllerName(spec.Name), "controller", r.controllerRules())...)
	for i := range spec.Stages {
		s := &spec.Stages[i]
		objs = append(objs, r.service(StageName(spec.Name, s.Name), r.stageLabels(s.Name), corev1.ServiceTypeClusterIP),
			r.stageDeployment(s), r.disruptionBudget(StageName(spec.Name, s.Name), r.stageLabels(s.Name)))
	}
	objs = append(objs, r.service(RouterName(spec.Name), r.labels("router", ""), opt.RouterServiceType),
		r.routerDeployment(), r.disruptionBudget(RouterName(spec.Name), r.labels("router", "")), r.controllerDeployment())
	return objs, nil
}

// defaults fills opt's defaults and checks spec and opt.
func (opt *ManifestOptions) defaults(spec *models.Pipeline) error {
	if spec == nil || len(spec.Stages) == 0 {
		return fmt.Errorf("the pipeline has no steps")
	}
	var steps []string
	for i := range spec.Stages {
		s := &spec.Stages[i]
		steps = append(steps, s.Name)
		if s.Model == "" {
			return fmt.Errorf("step %q of pipeline %q names no model", s.Name, spec.Name)
		}
		if err := s.Initial.Validate(); err != nil {
			return fmt.Errorf("step %q of pipeline %q: initial configuration: %v (load the spec with pipespec.Parse, which fills it)", s.Name, spec.Name, err)
		}
	}
	if err := CheckNames(spec.Name, steps); err != nil {
		return err
	}
	if opt.Namespace == "" {
		opt.Namespace = DefaultNamespace
	}
	if errs := validation.IsDNS1123Label(opt.Namespace); len(errs) > 0 {
		return fmt.Errorf("namespace %q: %s", opt.Namespace, strings.Join(errs, "; "))
	}
	if opt.Image == "" {
		opt.Image = DefaultImage
	}
	switch opt.ImagePullPolicy {
	case "":
		opt.ImagePullPolicy = corev1.PullIfNotPresent
	case corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
	default:
		return fmt.Errorf("image pull policy %q: use Always, IfNotPresent or Never", opt.ImagePullPolicy)
	}
	switch opt.RouterServiceType {
	case "":
		opt.RouterServiceType = corev1.ServiceTypeClusterIP
	case corev1.ServiceTypeClusterIP, corev1.ServiceTypeNodePort, corev1.ServiceTypeLoadBalancer:
	default:
		return fmt.Errorf("router service type %q: use ClusterIP, NodePort or LoadBalancer", opt.RouterServiceType)
	}
	if len(bytes.TrimSpace(opt.Source)) == 0 {
		return fmt.Errorf("the pipeline spec's source text is needed: the router and the controller read it from the ConfigMap %q", PipelineConfigName(spec.Name))
	}
	if err := sameSpec(spec, opt.Source); err != nil {
		return err
	}
	if len(bytes.TrimSpace(opt.Profile)) == 0 {
		return fmt.Errorf("the controller needs a profile of the pipeline's stages: pass --profile FILE (measure one with `ipa profile --stage …`)")
	}
	if !json.Valid(opt.Profile) {
		return fmt.Errorf("the profile is not JSON: pass the file `ipa profile` wrote")
	}
	if opt.ModelsVolume != "" {
		if errs := validation.IsDNS1123Subdomain(opt.ModelsVolume); len(errs) > 0 {
			return fmt.Errorf("models volume %q is not a PersistentVolumeClaim name: %s", opt.ModelsVolume, strings.Join(errs, "; "))
		}
	}
	if opt.AdminTokenSecret != "" {
		if errs := validation.IsDNS1123Subdomain(opt.AdminTokenSecret); len(errs) > 0 {
			return fmt.Errorf("admin token secret %q is not a Secret name: %s", opt.AdminTokenSecret, strings.Join(errs, "; "))
		}
		if len(opt.AdminToken) > 0 {
			return fmt.Errorf("give the admin token (--admin-token-file) or an existing Secret holding it (--admin-token-secret), not both")
		}
	}
	if len(opt.AdminToken) > 0 {
		if len(opt.AdminToken) < 16 || bytes.ContainsAny(opt.AdminToken, " \t\r\n") {
			return fmt.Errorf("the admin token must be at least 16 characters without spaces or line breaks (e.g. head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n')")
		}
	}
	for step, q := range opt.StageMemory {
		if !slices.Contains(steps, step) {
			return fmt.Errorf("memory given for step %q, which pipeline %q does not have (steps: %v)", step, spec.Name, steps)
		}
		if q.Sign() <= 0 {
			return fmt.Errorf("memory of step %q must be positive, not %s", step, q.String())
		}
	}
	if opt.AwaitConfig == 0 {
		opt.AwaitConfig = DefaultAwaitConfig
	} else if opt.AwaitConfig < 0 {
		opt.AwaitConfig = 0
	}
	return nil
}

// sameSpec reports a source text that does not describe spec: the pods would
// serve another pipeline than the one rendered.
func sameSpec(spec *models.Pipeline, src []byte) error {
	p, err := pipespec.Parse(src, nil, nil, nil)
	if err != nil {
		return fmt.Errorf("the pipeline spec's source text: %w", err)
	}
	same := p.Name == spec.Name && len(p.Stages) == len(spec.Stages)
	for i := 0; same && i < len(p.Stages); i++ {
		same = p.Stages[i].Name == spec.Stages[i].Name && p.Stages[i].Model == spec.Stages[i].Model
	}
	if !same {
		return fmt.Errorf("the pipeline spec's source text describes pipeline %q with steps %v, not %q with steps %v",
			p.Name, stepModels(p), spec.Name, stepModels(spec))
	}
	return nil
}

func stepModels(p *models.Pipeline) []string {
	var out []string
	for _, s := range p.Stages {
		out = append(out, s.Name+"="+s.Model)
	}
	return out
}

func sha256Hex(parts ...[]byte) string {
	h := sha256.New()
	for _, p := range parts {
		fmt.Fprintf(h, "%d:", len(p))
		h.Write(p)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// renderer builds the objects of one pipeline.
type renderer struct {
	spec     *models.Pipeline
	opt      ManifestOptions
	tokenSum string // sha256Hex of the rendered token; "" with an existing Secret
}

// labels are the labels of a component's objects; they are all stable, so
// they are also its selector. step is "" but for stages.
func (r *renderer) labels(component, step string) map[string]string {
	l := map[string]string{LabelName: "ipa", LabelPipeline: r.spec.Name}
	if component != "" {
		l[LabelComponent] = component
	}
	if step != "" {
		l[LabelStep] = step
	}
	return l
}

func (r *renderer) stageLabels(step string) map[string]string { return r.labels("stage", step) }

func (r *renderer) meta(name string, labels map[string]string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, Namespace: r.opt.Namespace, Labels: maps.Clone(labels)}
}

func (r *renderer) configMap() *corev1.ConfigMap {
	return &corev1.ConfigMap{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: r.meta(PipelineConfigName(r.spec.Name), r.labels("", "")),
		Data:       map[string]string{PipelineKey: string(r.opt.Source), ProfileKey: string(r.opt.Profile)},
	}
}

func (r *renderer) configSum() string { return sha256Hex(r.opt.Source, r.opt.Profile) }

func (r *renderer) secret(token []byte) *corev1.Secret {
	return &corev1.Secret{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: r.meta(AdminTokenName(r.spec.Name), r.labels("", "")),
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{TokenKey: token},
	}
}

func (r *renderer) tokenSecretName() string {
	if r.opt.AdminTokenSecret != "" {
		return r.opt.AdminTokenSecret
	}
	return AdminTokenName(r.spec.Name)
}

// routerRules: discovery of each step's ready pods from EndpointSlices.
func (r *renderer) routerRules() []rbacv1.PolicyRule {
	return []rbacv1.PolicyRule{
		{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"list", "watch"}},
	}
}

// controllerRules are exactly what the actuator uses. Reading and patching
// a Deployment and its scale is limited to the pipeline's stages; list and
// watch cannot be limited by name, so they are not.
func (r *renderer) controllerRules() []rbacv1.PolicyRule {
	var stages []string
	for _, s := range r.spec.Stages {
		stages = append(stages, StageName(r.spec.Name, s.Name))
	}
	return []rbacv1.PolicyRule{
		{APIGroups: []string{"apps"}, Resources: []string{"deployments"}, Verbs: []string{"get", "patch"}, ResourceNames: stages},
		{APIGroups: []string{"apps"}, Resources: []string{"deployments"}, Verbs: []string{"list", "watch"}},
		{APIGroups: []string{"apps"}, Resources: []string{"deployments/scale"}, Verbs: []string{"get", "update"}, ResourceNames: stages},
		{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"list", "watch"}},
	}
}

// rbac returns the ServiceAccount, Role and RoleBinding called name.
func (r *renderer) rbac(name, component string, rules []rbacv1.PolicyRule) []Object {
	l := r.labels(component, "")
	return []Object{
		&corev1.ServiceAccount{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"},
			ObjectMeta: r.meta(name, l),
		},
		&rbacv1.Role{
			TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "Role"},
			ObjectMeta: r.meta(name, l),
			Rules:      rules,
		},
		&rbacv1.RoleBinding{
			TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "RoleBinding"},
			ObjectMeta: r.meta(name, l),
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: name, Namespace: r.opt.Namespace}},
		},
	}
}

func (r *renderer) service(name string, labels map[string]string, typ corev1.ServiceType) *corev1.Service {
	return &corev1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: r.meta(name, labels),
		Spec: corev1.ServiceSpec{
			Type:     typ,
			Selector: maps.Clone(labels),
			Ports: []corev1.ServicePort{{Name: PortName, Protocol: corev1.ProtocolTCP, Port: Port,
				TargetPort: intstr.FromString(PortName)}},
		},
	}
}

// How the stage and router pods stop. Kubernetes marks a terminating pod's
// endpoints not ready at once (the router's discovery drops it), runs
// preStop (a sleep of PreStopSeconds, for the endpoints to propagate),
// then sends SIGTERM: the process turns readiness off and answers new
// requests 503 with Connection: close for ShutdownLinger, computes and
// answers the requests in flight and queued within ShutdownGrace, answers
// what is left 503 (2 s at most), and exits. TerminationGraceSeconds covers
// all of it, with room to spare, before the kubelet sends SIGKILL.
const (
	PreStopSeconds          = 5
	ShutdownLinger          = time.Second
	ShutdownGrace           = 20 * time.Second
	TerminationGraceSeconds = int64(PreStopSeconds + (ShutdownLinger+ShutdownGrace)/time.Second + 4)
)

// shutdownArgs are the flags of the drain TerminationGraceSeconds covers.
func shutdownArgs() []string {
	return []string{"--shutdown.grace-period", ShutdownGrace.String(), "--shutdown.linger", ShutdownLinger.String()}
}

func httpProbe(path string, period, timeout, failures int32) *corev1.Probe {
	return &corev1.Probe{
		ProbeHandler:     corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromString(PortName)}},
		PeriodSeconds:    period,
		TimeoutSeconds:   timeout,
		SuccessThreshold: 1,
		FailureThreshold: failures,
	}
}

func listenAddr() string { return "0.0.0.0:" + strconv.Itoa(Port) }

// container is the part every role's container shares.
func (r *renderer) container(args []string, env []corev1.EnvVar, mounts []corev1.VolumeMount, res corev1.ResourceRequirements) corev1.Container {
	return corev1.Container{
		Name:            ContainerName,
		Image:           r.opt.Image,
		ImagePullPolicy: r.opt.ImagePullPolicy,
		Args:            args,
		Env:             env,
		Ports:           []corev1.ContainerPort{{Name: PortName, ContainerPort: Port, Protocol: corev1.ProtocolTCP}},
		Resources:       res,
		VolumeMounts:    mounts,
		SecurityContext: &corev1.SecurityContext{
			RunAsNonRoot:             new(true),
			RunAsUser:                new(int64(RunAsUser)),
			RunAsGroup:               new(int64(RunAsUser)),
			ReadOnlyRootFilesystem:   new(true),
			AllowPrivilegeEscalation: new(false),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		},
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}
}

// volumes returns the pod's volumes and the container's mounts: /tmp (the
// root filesystem is read-only), the model repository when it is a PVC, and
// the ConfigMap's keys when any are asked for.
func (r *renderer) volumes(configKeys ...string) ([]corev1.Volume, []corev1.VolumeMount) {
	vols := []corev1.Volume{{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{
		SizeLimit: new(resource.MustParse("64Mi"))}}}}
	mounts := []corev1.VolumeMount{{Name: "tmp", MountPath: "/tmp"}}
	if r.opt.ModelsVolume != "" {
		vols = append(vols, corev1.Volume{Name: "models", VolumeSource: corev1.VolumeSource{
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: r.opt.ModelsVolume, ReadOnly: true}}})
		mounts = append(mounts, corev1.VolumeMount{Name: "models", MountPath: ModelsDir, ReadOnly: true})
	}
	if len(configKeys) > 0 {
		var items []corev1.KeyToPath
		for _, k := range configKeys {
			items = append(items, corev1.KeyToPath{Key: k, Path: k})
		}
		vols = append(vols, corev1.Volume{Name: "pipeline", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: PipelineConfigName(r.spec.Name)}, Items: items}}})
		mounts = append(mounts, corev1.VolumeMount{Name: "pipeline", MountPath: ConfigDir, ReadOnly: true})
	}
	return vols, mounts
}

func (r *renderer) tokenEnv() corev1.EnvVar {
	return corev1.EnvVar{Name: "IPA_ADMIN_TOKEN", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
		LocalObjectReference: corev1.LocalObjectReference{Name: r.tokenSecretName()}, Key: TokenKey}}}
}

func namespaceEnv() corev1.EnvVar {
	return corev1.EnvVar{Name: "POD_NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{
		APIVersion: "v1", FieldPath: "metadata.namespace"}}}
}

// podSpec is the part every role's pod shares.
func (r *renderer) podSpec(c corev1.Container, vols []corev1.Volume, serviceAccount string) corev1.PodSpec {
	ps := corev1.PodSpec{
		Containers: []corev1.Container{c},
		Volumes:    vols,
		// preStop sleeps so that the endpoints controller and the router
		// take the pod out before the process is signalled; then the
		// process drains (ShutdownLinger, ShutdownGrace).
		TerminationGracePeriodSeconds: new(TerminationGraceSeconds),
		EnableServiceLinks:            new(false),
		SecurityContext: &corev1.PodSecurityContext{
			RunAsNonRoot:   new(true),
			RunAsUser:      new(int64(RunAsUser)),
			RunAsGroup:     new(int64(RunAsUser)),
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
	}
	ps.Containers[0].Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Sleep: &corev1.SleepAction{Seconds: PreStopSeconds}}}
	if serviceAccount == "" {
		ps.AutomountServiceAccountToken = new(false)
	} else {
		ps.ServiceAccountName = serviceAccount
		ps.AutomountServiceAccountToken = new(true)
	}
	return ps
}

func (r *renderer) deployment(name string, labels map[string]string, replicas int32, strategy appsv1.DeploymentStrategy,
	annotations map[string]string, ps corev1.PodSpec) *appsv1.Deployment {
	return &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: r.meta(name, labels),
		Spec: appsv1.DeploymentSpec{
			Replicas: new(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: maps.Clone(labels)},
			Strategy: strategy,
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: maps.Clone(labels), Annotations: annotations},
				Spec:       ps,
			},
		},
	}
}

func withoutEmpty(m map[string]string) map[string]string {
	for k, v := range m {
		if v == "" {
			delete(m, k)
		}
	}
	if len(m) == 0 {
		return nil
	}
	return m
}

// stageDeployment runs step s: one engine replica per pod, its initial
// variant, batch and cores; the controller scales the Deployment.
func (r *renderer) stageDeployment(s *models.Step) *appsv1.Deployment {
	init := s.Initial
	args := []string{"stage",
		"--stage", s.Model,
		"--models.dir", ModelsDir,
		"--http.listen-addr", listenAddr(),
		"--variant", init.Variant,
		"--replicas", "1",
		"--cores", strconv.Itoa(init.Cores),
		"--batch.max-batch", strconv.Itoa(init.MaxBatch),
		"--batch.max-wait", init.MaxWait.String(),
		"--admin.await-config", r.opt.AwaitConfig.String(),
	}
	args = append(args, shutdownArgs()...)
	if len(s.Variants) > 0 { // load only what the pipeline may switch to
		args = append(args, "--variants", strings.Join(s.Variants, ","))
	}
	mem, ok := r.opt.StageMemory[s.Name]
	if !ok {
		mem = resource.MustParse(DefaultStageMemory)
	}
	cpu := *resource.NewQuantity(int64(init.Cores), resource.DecimalSI)
	res := corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: cpu, corev1.ResourceMemory: mem},
		Limits:   corev1.ResourceList{corev1.ResourceCPU: cpu, corev1.ResourceMemory: StageMemoryLimit(mem)},
	}
	vols, mounts := r.volumes()
	c := r.container(args, []corev1.EnvVar{r.tokenEnv()}, mounts, res)
	// Loading every variant takes seconds (classify: 5 s on a busy 2-core
	// machine) and the port opens only after it: up to 5 minutes.
	c.StartupProbe = httpProbe("/v2/health/live", 5, 2, 60)
	// Not ready while loading, draining, or before the controller's plan
	// arrived (--await-config).
	c.ReadinessProbe = httpProbe("/v2/health/ready", 2, 2, 2)
	// Health is answered outside the batch queue; 3 misses 10 s apart
	// restart a wedged process.
	c.LivenessProbe = httpProbe("/v2/health/live", 10, 5, 3)
	// A rollout keeps every replica the controller planned for serving
	// (new pods join first; they load before they are ready).
	strategy := appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType, RollingUpdate: &appsv1.RollingUpdateDeployment{
		MaxUnavailable: new(intstr.FromInt32(0)), MaxSurge: new(intstr.FromString("25%"))}}
	d := r.deployment(StageName(r.spec.Name, s.Name), r.stageLabels(s.Name), int32(init.Replicas), strategy,
		withoutEmpty(map[string]string{AnnotationTokenSHA256: r.tokenSum}), r.podSpec(c, vols, ""))
	if init.Replicas == 1 {
		// The controller owns the scale. Left out, replicas default to 1
		// and a re-apply of these manifests does not undo its scaling
		// (kubectl apply only changes the fields it applied).
		d.Spec.Replicas = nil
	}
	return d
}

// routerDeployment runs the router: one replica, because the controller
// reads the arrival rate from it (/router/rate), and a second router would
// each see part of the load. It finds the stages' ready pods from their
// EndpointSlices.
func (r *renderer) routerDeployment() *appsv1.Deployment {
	args := []string{"router",
		"--pipeline", ConfigDir + "/" + PipelineKey,
		"--models.dir", ModelsDir,
		"--http.listen-addr", listenAddr(),
		"--kube.discover",
		"--kube.namespace", "$(POD_NAMESPACE)",
	}
	args = append(args, shutdownArgs()...)
	// Bodies pass through the router (each up to --http.max-body-size): the
	// limit leaves room for a few large ones at once.
	res := corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("500m"), corev1.ResourceMemory: resource.MustParse("256Mi")},
		Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi")}}
	vols, mounts := r.volumes(PipelineKey)
	c := r.container(args, []corev1.EnvVar{namespaceEnv()}, mounts, res)
	c.StartupProbe = httpProbe("/v2/health/live", 2, 2, 30)
	c.ReadinessProbe = httpProbe("/v2/health/ready", 2, 2, 2)
	c.LivenessProbe = httpProbe("/v2/health/live", 10, 5, 3)
	// Replace the router without a gap: the new one is ready before the old one stops.
	strategy := appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType, RollingUpdate: &appsv1.RollingUpdateDeployment{
		MaxUnavailable: new(intstr.FromInt32(0)), MaxSurge: new(intstr.FromInt32(1))}}
	return r.deployment(RouterName(r.spec.Name), r.labels("router", ""), 1, strategy,
		map[string]string{AnnotationPipelineSHA256: r.configSum()}, r.podSpec(c, vols, RouterName(r.spec.Name)))
}

// controllerDeployment runs the adaptation loop: exactly one, never two at
// once (Recreate).
func (r *renderer) controllerDeployment() *appsv1.Deployment {
	args := []string{"controller",
		"--pipeline", ConfigDir + "/" + PipelineKey,
		"--models.dir", ModelsDir,
		"--router", "http://" + RouterName(r.spec.Name) + ":" + strconv.Itoa(Port),
		"--kube",
		"--kube.namespace", "$(POD_NAMESPACE)",
		"--controller.profile", ConfigDir + "/" + ProfileKey,
		"--http.listen-addr", listenAddr(),
	}
	res := corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")},
		Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("512Mi")}}
	vols, mounts := r.volumes(PipelineKey, ProfileKey)
	c := r.container(args, []corev1.EnvVar{namespaceEnv(), r.tokenEnv()}, mounts, res)
	// It serves /healthz once its informers synced and the loop is built.
	c.StartupProbe = httpProbe("/healthz", 2, 2, 60)
	c.LivenessProbe = httpProbe("/healthz", 10, 5, 3)
	return r.deployment(ControllerName(r.spec.Name), r.labels("controller", ""), 1,
		appsv1.DeploymentStrategy{Type: appsv1.RecreateDeploymentStrategyType},
		withoutEmpty(map[string]string{AnnotationPipelineSHA256: r.configSum(), AnnotationTokenSHA256: r.tokenSum}),
		r.podSpec(c, vols, ControllerName(r.spec.Name)))
}

// stageNetworkPolicy lets only the pipeline's router (inference) and
// controller (admin API) reach its stage pods, on their one port. The admin
// API shares that port with inference, so a policy (which sees ports, not
// paths) cannot keep the router from it: the admin token does. Nothing
// else reaches a stage pod, a Prometheus server scraping its /metrics
// included: add a rule for it (README "Run on Kubernetes").
func (r *renderer) stageNetworkPolicy() *networkingv1.NetworkPolicy {
	from := func(component string) networkingv1.NetworkPolicyPeer {
		return networkingv1.NetworkPolicyPeer{PodSelector: &metav1.LabelSelector{MatchLabels: r.labels(component, "")}}
	}
	return &networkingv1.NetworkPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: "networking.k8s.io/v1", Kind: "NetworkPolicy"},
		ObjectMeta: r.meta(StagePolicyName(r.spec.Name), r.labels("stage", "")),
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: r.labels("stage", "")},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{from("router"), from("controller")},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: new(corev1.ProtocolTCP), Port: new(intstr.FromString(PortName))}},
			}},
		},
	}
}

// disruptionBudget keeps voluntary disruptions (a node drain) to one pod of
// a Deployment at a time. maxUnavailable rather than minAvailable, so that a
// Deployment at one replica (the router; a stage the controller scaled
// down) can still be drained; a pod that is not ready may always be
// evicted, so a crash-looping one never blocks a drain.
func (r *renderer) disruptionBudget(name string, labels map[string]string) *policyv1.PodDisruptionBudget {
	return &policyv1.PodDisruptionBudget{
		TypeMeta:   metav1.TypeMeta{APIVersion: "policy/v1", Kind: "PodDisruptionBudget"},
		ObjectMeta: r.meta(name, labels),
		Spec: policyv1.PodDisruptionBudgetSpec{
			MaxUnavailable:             new(intstr.FromInt32(1)),
			Selector:                   &metav1.LabelSelector{MatchLabels: maps.Clone(labels)},
			UnhealthyPodEvictionPolicy: new(policyv1.AlwaysAllow),
		},
	}
}

// WriteYAML writes objs as one multi-document YAML stream, each document
// starting with "---". Status is left out: it is the cluster's to write
// (a PodDisruptionBudget's zero counts would otherwise be rendered).
func WriteYAML(w io.Writer, objs []Object) error {
	var buf bytes.Buffer
	for _, o := range objs {
		if o.GetObjectKind().GroupVersionKind().Kind == "" {
			return fmt.Errorf("object %q has no kind", o.GetName())
		}
		j, err := json.Marshal(o)
		if err != nil {
			return fmt.Errorf("%s %q: %w", o.GetObjectKind().GroupVersionKind().Kind, o.GetName(), err)
		}
		var m map[string]any
		if err := json.Unmarshal(j, &m); err != nil {
			return err
		}
		delete(m, "status")
		y, err := yaml.Marshal(m)
		if err != nil {
			return fmt.Errorf("%s %q: %w", o.GetObjectKind().GroupVersionKind().Kind, o.GetName(), err)
		}
		buf.WriteString("---\n")
		buf.Write(y)
	}
	_, err := w.Write(buf.Bytes())
	return err
}

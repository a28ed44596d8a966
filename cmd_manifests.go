package main

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/ipa-serving/ipa/models/pipespec"
	"github.com/ipa-serving/ipa/orchestrator/kube"
)

// ManifestsCmd renders the Kubernetes objects that run a pipeline: a
// Deployment and Service per step, the router, the controller, their RBAC,
// the ConfigMap holding the spec and profile, and the admin token Secret.
type ManifestsCmd struct {
	Models            RepoFlags     `embed:"" prefix:"models."`
	Pipeline          PipelineFlags `embed:""`
	Profile           string        `placeholder:"FILE" help:"Profile file of the pipeline's stages (from 'ipa profile'); the controller solves with it. Required."`
	Namespace         string        `default:"default" help:"Namespace of every object."`
	Image             string        `default:"ipa:latest" help:"Image of every container (the Dockerfile's: ipa on its ENTRYPOINT, the model repository at /models)."`
	ImagePullPolicy   string        `name:"image-pull-policy" default:"IfNotPresent" enum:"Always,IfNotPresent,Never" help:"Pull policy of the image: ${enum}."`
	ModelsVolume      string        `name:"models-volume" placeholder:"PVC" help:"PersistentVolumeClaim holding the model repository, mounted read-only at /models (default: the image's /models)."`
	AdminTokenSecret  string        `name:"admin-token-secret" placeholder:"NAME" help:"Existing Secret whose key \"token\" is the stages' admin token (default: render a Secret with a random one; re-rendering changes it and restarts the pods)."`
	RouterServiceType string        `name:"router-service-type" default:"ClusterIP" enum:"ClusterIP,NodePort,LoadBalancer" help:"Type of the router's Service: ${enum}."`
	StageMemory       []string      `name:"stage-memory" sep:"none" placeholder:"STEP=QUANTITY" help:"Memory request of a step's pods, e.g. classify=2Gi; repeat per step (default 1Gi each; the classify stage needs 2Gi)."`
	AwaitConfig       time.Duration `name:"await-config" default:"30s" help:"How long a new stage pod waits for the controller's plan before it reports ready anyway."`
	Out               string        `placeholder:"FILE" help:"Write the YAML here instead of stdout."`
}

// Run renders the manifests.
func (c *ManifestsCmd) Run(g *Globals) error {
	objs, err := c.render()
	if err != nil {
		return err
	}
	write := func(w io.Writer) error { return kube.WriteYAML(w, objs) }
	if c.Out != "" {
		return writeFile(c.Out, write)
	}
	return write(os.Stdout)
}

// render loads and checks the spec and the profile and renders the objects.
func (c *ManifestsCmd) render() ([]kube.Object, error) {
	if c.Profile == "" {
		return nil, fmt.Errorf("ipa manifests needs --profile FILE: the controller solves with the measured profile of the pipeline's stages (measure one with `ipa profile --stage …`)")
	}
	repo, spec, err := c.Pipeline.Open(c.Models)
	if err != nil {
		return nil, err
	}
	if err := kube.CheckNames(spec.Name, stepNames(spec.Stages)); err != nil {
		return nil, err
	}
	src, err := c.Pipeline.source()
	if err != nil {
		return nil, err
	}
	// The controller would refuse a profile without the pipeline's stages:
	// say so now rather than in a crash-looping pod.
	prof, err := loadProfile(c.Profile)
	if err != nil {
		return nil, err
	}
	if _, err := pipelineStages(spec, repo, prof, c.Profile); err != nil {
		return nil, err
	}
	profile, err := os.ReadFile(c.Profile)
	if err != nil {
		return nil, err
	}
	memory := map[string]resource.Quantity{}
	for _, m := range c.StageMemory {
		step, q, ok := strings.Cut(m, "=")
		if !ok {
			return nil, fmt.Errorf("--stage-memory %q: write STEP=QUANTITY, e.g. %s=2Gi", m, spec.Stages[0].Name)
		}
		if spec.Step(step) == nil {
			return nil, fmt.Errorf("--stage-memory %q: pipeline %q has no step %q (steps: %v)", m, spec.Name, step, stepNames(spec.Stages))
		}
		qty, err := resource.ParseQuantity(q)
		if err != nil {
			return nil, fmt.Errorf("--stage-memory %q: %q is not a quantity such as 1536Mi or 2Gi", m, q)
		}
		memory[step] = qty
	}
	await := c.AwaitConfig
	if await == 0 {
		await = -1 // Render's zero means its default; ask for 0s explicitly
	}
	return kube.Render(spec, kube.ManifestOptions{
		Namespace:         c.Namespace,
		Image:             c.Image,
		ImagePullPolicy:   corev1.PullPolicy(c.ImagePullPolicy),
		Source:            src,
		Profile:           profile,
		ModelsVolume:      c.ModelsVolume,
		AdminTokenSecret:  c.AdminTokenSecret,
		RouterServiceType: corev1.ServiceType(c.RouterServiceType),
		StageMemory:       memory,
		AwaitConfig:       await,
	})
}

// source returns the spec's text as Load read it.
func (f PipelineFlags) source() ([]byte, error) {
	if slices.Contains(pipespec.BuiltinNames(), f.Pipeline) {
		return pipespec.Builtin(f.Pipeline)
	}
	return os.ReadFile(f.Pipeline)
}

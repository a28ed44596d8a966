package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/ipa-serving/ipa/models"
	"github.com/ipa-serving/ipa/models/pipespec"
	"github.com/ipa-serving/ipa/orchestrator/kube"
	"github.com/ipa-serving/ipa/profiles"
)

// ManifestsCmd renders the Kubernetes objects that run a pipeline: a
// Deployment, Service and PodDisruptionBudget per step, the router, the
// controller, their RBAC, the stage pods' NetworkPolicy, the ConfigMap
// holding the spec and profile, and the admin token Secret when given its
// token (--admin-token-file).
type ManifestsCmd struct {
	Models            RepoFlags     `embed:"" prefix:"models."`
	Pipeline          PipelineFlags `embed:""`
	Profile           string        `placeholder:"FILE" help:"Profile file of the pipeline's stages (from 'ipa profile'); the controller solves with it. Required."`
	Namespace         string        `default:"default" help:"Namespace of every object."`
	Image             string        `default:"ipa:latest" help:"Image of every container (the Dockerfile's: ipa on its ENTRYPOINT, the model repository at /models)."`
	ImagePullPolicy   string        `name:"image-pull-policy" default:"IfNotPresent" enum:"Always,IfNotPresent,Never" help:"Pull policy of the image: ${enum}."`
	ModelsVolume      string        `name:"models-volume" placeholder:"PVC" help:"PersistentVolumeClaim holding the model repository, mounted read-only at /models (default: the image's /models)."`
	AdminTokenSecret  string        `name:"admin-token-secret" placeholder:"NAME" help:"Existing Secret whose key \"token\" is the stages' admin token (default: PIPELINE-admin-token, which you create once: the command is printed on stderr)."`
	AdminTokenFile    string        `name:"admin-token-file" placeholder:"FILE" type:"path" help:"Render the Secret PIPELINE-admin-token with the token in this file (the same file renders the same Secret, so a re-apply keeps the pods)."`
	RouterServiceType string        `name:"router-service-type" default:"ClusterIP" enum:"ClusterIP,NodePort,LoadBalancer" help:"Type of the router's Service: ${enum}."`
	StageMemory       []string      `name:"stage-memory" sep:"none" placeholder:"STEP=QUANTITY" help:"Memory request of a step's pods, e.g. classify=3Gi; repeat per step (default: the memory model's estimate of one replica of the step's variants at the largest batch its profile measured; README \"Memory\"). The limit is the request plus a quarter, at least 256Mi more."`
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
	memory, err := modelMemory(spec, repo, prof, c.Models.Dir)
	if err != nil {
		return nil, err
	}
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
	var token []byte
	if c.AdminTokenFile != "" {
		if token, err = os.ReadFile(c.AdminTokenFile); err != nil {
			return nil, fmt.Errorf("--admin-token-file: %w", err)
		}
		token = bytes.TrimSpace(token)
	} else if c.AdminTokenSecret == "" {
		fmt.Fprintf(os.Stderr, "the stage and controller pods read the admin token from Secret %s, which these manifests do not hold (a re-apply never rotates it); create it once:\n  %s\n",
			kube.AdminTokenName(spec.Name), kube.AdminTokenCommand(c.Namespace, spec.Name))
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
		AdminToken:        token,
		RouterServiceType: corev1.ServiceType(c.RouterServiceType),
		StageMemory:       memory,
		AwaitConfig:       await,
	})
}

// modelMemory returns each step's memory request by the memory model
// (profiles.MeasuredMemory): a pod's one replica of the step's variants,
// each at the largest batch the profile measured for the step (the
// controller may set max_batch that high, and the arena keeps its peak),
// rounded up to MiB.
func modelMemory(spec *models.Pipeline, repo *models.Repository, prof *profiles.Profile, dir string) (map[string]resource.Quantity, error) {
	mem := profiles.MeasuredMemory()
	out := map[string]resource.Quantity{}
	for _, s := range spec.Stages {
		meta, err := s.RepoStage(repo)
		if err != nil {
			return nil, err
		}
		batch := max(s.Initial.MaxBatch, 1)
		for _, v := range meta.Variants {
			if vp := prof.Variant(meta.Name, v.Name); vp != nil {
				for _, c := range vp.Configs {
					batch = max(batch, slices.Max(c.Batches()))
				}
			}
		}
		e := mem.Estimate(meta.Name, variantFiles(dir, meta), batch)
		if len(e.Unmeasured) > 0 {
			fmt.Fprintf(os.Stderr, "step %q: the memory model has not measured variants %v of %q; their memory is estimated from their files (measure them with `ipa models memory --stage %s`, or pass --stage-memory %s=QUANTITY)\n",
				s.Name, e.Unmeasured, meta.Name, meta.Name, s.Name)
		}
		const mi = 1 << 20
		out[s.Name] = *resource.NewQuantity((e.Total(1)+mi-1)/mi*mi, resource.BinarySI)
	}
	return out, nil
}

// source returns the spec's text as Load read it.
func (f PipelineFlags) source() ([]byte, error) {
	if slices.Contains(pipespec.BuiltinNames(), f.Pipeline) {
		return pipespec.Builtin(f.Pipeline)
	}
	return os.ReadFile(f.Pipeline)
}

package main

import (
	"context"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/ipa-serving/ipa/dataplane"
	"github.com/ipa-serving/ipa/dataplane/router"
	"github.com/ipa-serving/ipa/orchestrator/kube"
)

// RouterCmd serves a pipeline whose stages run as separate `ipa stage`
// processes (or pods).
type RouterCmd struct {
	Models    RepoFlags              `embed:"" prefix:"models."`
	Pipeline  PipelineFlags          `embed:""`
	Endpoints []string               `name:"endpoints" sep:"none" placeholder:"STEP=HOST:PORT[,HOST:PORT…]" help:"Replicas of a step of the pipeline; repeat per step."`
	Discover  bool                   `name:"kube.discover" help:"Find each step's ready replicas from the EndpointSlices of its Service (see 'ipa manifests') instead of --endpoints."`
	Kube      kube.Flags             `embed:"" prefix:"kube."`
	HTTP      dataplane.ServerConfig `embed:"" prefix:"http."`
	// Failover and shutdown.
	Probe    time.Duration            `name:"probe-interval" default:"1s" help:"How often each replica's readiness (/v2/health/ready) is probed; a replica that is down (a refused or broken connection, or not ready) gets no requests until a probe finds it ready."`
	Shutdown dataplane.ShutdownConfig `embed:"" prefix:"shutdown."`
}

// endpoints parses --endpoints into step → addresses.
func (c *RouterCmd) endpoints() (map[string][]string, error) {
	m := map[string][]string{}
	for _, e := range c.Endpoints {
		step, addrs, ok := strings.Cut(e, "=")
		if !ok || step == "" || addrs == "" {
			return nil, fmt.Errorf("--endpoints %q: write STEP=HOST:PORT[,HOST:PORT…]", e)
		}
		for _, a := range strings.Split(addrs, ",") {
			if _, _, err := net.SplitHostPort(a); err != nil {
				return nil, fmt.Errorf("--endpoints %q: %q is not HOST:PORT", e, a)
			}
			m[step] = append(m[step], a)
		}
	}
	return m, nil
}

// Run serves until SIGINT or SIGTERM, then drains (see serveDrained).
func (c *RouterCmd) Run(g *Globals) error {
	log := g.Logger().With("role", "router")
	ctx := signalContext(log)
	repo, spec, err := c.Pipeline.Open(c.Models)
	if err != nil {
		return err
	}
	eps, err := c.endpoints()
	if err != nil {
		return err
	}
	if c.Discover && len(eps) > 0 {
		return fmt.Errorf("--kube.discover finds the endpoints: drop --endpoints")
	}
	var steps []*router.Step
	clients := map[string]*router.RemoteClient{}
	for _, s := range spec.Stages {
		addrs, ok := eps[s.Name]
		if !ok && !c.Discover {
			return fmt.Errorf("no --endpoints for step %q of pipeline %q (steps: %v); or pass --kube.discover", s.Name, spec.Name, stepNames(spec.Stages))
		}
		delete(eps, s.Name)
		meta, err := s.RepoStage(repo)
		if err != nil {
			return err
		}
		client := router.NewRemoteClient(meta.Name, addrs)
		client.SetLogger(log.With("step", s.Name))
		clients[s.Name] = client
		steps = append(steps, &router.Step{Spec: s, Meta: meta, Client: client, Active: client.ActiveVariant, RepoDir: c.Models.Dir})
	}
	for step := range eps {
		return fmt.Errorf("--endpoints names step %q, which pipeline %q does not have (steps: %v)", step, spec.Name, stepNames(spec.Stages))
	}
	pipe, err := router.NewPipeline(spec, steps, router.BuiltinGlues())
	if err != nil {
		return err
	}
	if c.Discover {
		kc, err := c.Kube.Client()
		if err != nil {
			return err
		}
		_, err = kube.WatchEndpoints(ctx, kc, c.Kube.Namespace, spec.Name, stepNames(spec.Stages), func(step string, eps []kube.Endpoint) {
			clients[step].SetEndpoints(kube.ReadyAddrs(eps))
		}, log)
		if err != nil {
			return err
		}
	}
	probeCtx, stopProbes := context.WithCancel(context.Background())
	defer stopProbes()
	for _, client := range clients {
		go client.Probe(probeCtx, c.Probe)
	}
	router := router.NewRouter(c.HTTP, []*router.Pipeline{pipe}, log, version, nil)
	return serveDrained(ctx, log, c.HTTP.ListenAddr, router, c.Shutdown, stopWork{}, "pipeline", spec.Name, "sla", spec.SLA.String())
}

package kube

import (
	"fmt"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Flags are the Kubernetes flags of the router and the controller. Tags
// are kong's.
type Flags struct {
	Namespace  string `name:"namespace" env:"POD_NAMESPACE" default:"default" help:"Namespace of the pipeline's objects."`
	Kubeconfig string `name:"kubeconfig" env:"KUBECONFIG" placeholder:"FILE" help:"Kubeconfig to reach the API server (default: the pod's in-cluster ServiceAccount)."`
}

// Client returns a clientset from the kubeconfig, or from the in-cluster
// configuration when there is none.
func (f Flags) Client() (kubernetes.Interface, error) {
	var cfg *rest.Config
	var err error
	if f.Kubeconfig != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", f.Kubeconfig)
	} else {
		cfg, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("cannot reach Kubernetes: %w (outside a cluster pass --kube.kubeconfig or set KUBECONFIG)", err)
	}
	cfg.UserAgent = "ipa"
	return kubernetes.NewForConfig(cfg)
}

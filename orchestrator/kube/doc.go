// Package kube is ipa's Kubernetes seam: manifests for every role, discovery
// of a stage's ready replicas from EndpointSlices, and an orchestrator.Actuator
// that scales Deployments through the scale subresource and switches variant
// and batch size through each ready pod's admin API. It is the only package
// that imports client-go.
package kube

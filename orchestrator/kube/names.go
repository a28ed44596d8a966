package kube

import (
	"fmt"
	"regexp"
)

// The contract between the manifests ipa renders, the router's discovery and
// the Kubernetes actuator: object names, labels and the port name.
const (
	LabelName      = "app.kubernetes.io/name"      // always "ipa"
	LabelComponent = "app.kubernetes.io/component" // "stage", "router" or "controller"
	LabelPipeline  = "ipa-serving.io/pipeline"     // the pipeline's name
	LabelStep      = "ipa-serving.io/step"         // the step's name (stages only)

	// AnnotationConfig on a stage's Deployment holds the JSON StageConfig of
	// the plan the controller last applied (replicas = the Deployment's
	// scale, the rest = each pod's live configuration). A restarted
	// controller reads it back.
	AnnotationConfig = "ipa-serving.io/config"

	// PortName is the name of the V2/admin/metrics port of every role's
	// Service and container; Port its number.
	PortName = "http"
	Port     = 8080

	// Every stage pod's container is named ContainerName.
	ContainerName = "ipa"
)

var dns1035 = regexp.MustCompile(`^[a-z]([-a-z0-9]*[a-z0-9])?$`)

// StageName names the Deployment and Service of a pipeline's step.
func StageName(pipeline, step string) string { return pipeline + "-" + step }

// RouterName names the router's Deployment and Service.
func RouterName(pipeline string) string { return pipeline + "-router" }

// StagePolicyName names the NetworkPolicy of a pipeline's stage pods.
func StagePolicyName(pipeline string) string { return pipeline + "-stages" }

// ControllerName names the controller's Deployment and ServiceAccount.
func ControllerName(pipeline string) string { return pipeline + "-controller" }

// CheckNames reports a pipeline whose objects would get invalid or
// colliding names.
func CheckNames(pipeline string, steps []string) error {
	if !dns1035.MatchString(pipeline) || len(pipeline) > 40 {
		return fmt.Errorf("pipeline name %q cannot name Kubernetes objects: use at most 40 lowercase letters, digits and '-', starting with a letter", pipeline)
	}
	for _, s := range steps {
		if !dns1035.MatchString(s) || len(StageName(pipeline, s)) > 63 {
			return fmt.Errorf("step %q of pipeline %q cannot name a Kubernetes Service %q: use lowercase letters, digits and '-', at most 63 characters in all", s, pipeline, StageName(pipeline, s))
		}
		if s == "router" || s == "controller" {
			return fmt.Errorf("step %q of pipeline %q collides with the %s's objects: rename the step", s, pipeline, s)
		}
	}
	return nil
}

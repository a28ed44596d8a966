package kube

import (
	"context"
	"fmt"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/ipa-serving/ipa/orchestrator/kube/kubetest"
)

// create sends o to the API server with the typed client of its kind.
func create(ctx context.Context, cs kubernetes.Interface, o Object) error {
	ns, opt := o.GetNamespace(), metav1.CreateOptions{FieldValidation: "Strict"}
	var err error
	switch v := o.(type) {
	case *corev1.ConfigMap:
		_, err = cs.CoreV1().ConfigMaps(ns).Create(ctx, v, opt)
	case *corev1.Secret:
		_, err = cs.CoreV1().Secrets(ns).Create(ctx, v, opt)
	case *corev1.ServiceAccount:
		_, err = cs.CoreV1().ServiceAccounts(ns).Create(ctx, v, opt)
	case *corev1.Service:
		_, err = cs.CoreV1().Services(ns).Create(ctx, v, opt)
	case *rbacv1.Role:
		_, err = cs.RbacV1().Roles(ns).Create(ctx, v, opt)
	case *rbacv1.RoleBinding:
		_, err = cs.RbacV1().RoleBindings(ns).Create(ctx, v, opt)
	case *appsv1.Deployment:
		_, err = cs.AppsV1().Deployments(ns).Create(ctx, v, opt)
	case *networkingv1.NetworkPolicy:
		_, err = cs.NetworkingV1().NetworkPolicies(ns).Create(ctx, v, opt)
	case *policyv1.PodDisruptionBudget:
		_, err = cs.PolicyV1().PodDisruptionBudgets(ns).Create(ctx, v, opt)
	default:
		return fmt.Errorf("BUG: the test cannot create a %T", o)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", objKey(o), err)
	}
	return nil
}

// What Render makes, memory limits, NetworkPolicy and PodDisruptionBudgets
// included, is accepted by a real API server with strict field validation,
// and the disruption controller finds the pods each budget covers.
func TestManifestsApplyToARealAPIServer(t *testing.T) {
	c := needCluster(t)
	ns := c.Namespace(t)
	spec, src := builtinSpec(t, "ocr")
	objs, err := Render(spec, ManifestOptions{Namespace: ns, Source: src, Profile: []byte(testProfile),
		AdminToken:  []byte("0123456789abcdef0123456789abcdef"),
		StageMemory: map[string]resource.Quantity{"det": resource.MustParse("2300Mi"), "rec": resource.MustParse("200Mi")}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, o := range objs {
		if err := create(ctx, c.Client, o); err != nil {
			t.Fatal(err)
		}
	}
	d, err := c.Client.AppsV1().Deployments(ns).Get(ctx, StageName("ocr", "det"), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if lim := d.Spec.Template.Spec.Containers[0].Resources.Limits[corev1.ResourceMemory]; lim.Cmp(resource.MustParse("2875Mi")) != 0 {
		t.Errorf("det's memory limit as stored: %s, want 2875Mi", lim.String())
	}
	// The test cluster runs no disruption controller, so the budgets' pods
	// are counted here: each budget's selector selects exactly the pod its
	// Deployment made.
	for _, name := range []string{StageName("ocr", "det"), StageName("ocr", "rec"), RouterName("ocr")} {
		pdb, err := c.Client.PolicyV1().PodDisruptionBudgets(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
		if err != nil {
			t.Fatal(err)
		}
		kubetest.Eventually(t, 60*time.Second, name+"'s budget covers its Deployment's pod", func() (bool, string) {
			pods, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
			if err != nil {
				return false, err.Error()
			}
			var names []string
			for _, p := range pods.Items {
				names = append(names, p.Name)
			}
			return len(pods.Items) == 1 && len(pods.Items[0].OwnerReferences) == 1, fmt.Sprintf("pods %v", names)
		})
	}
}

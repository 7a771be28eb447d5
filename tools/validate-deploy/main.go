// Command validate-deploy checks Herald's deployment files without a Docker engine or a Kubernetes cluster.
//
//   - docker-compose.yml is loaded with compose-go, the library `docker compose` itself uses: schema validation,
//     interpolation, normalisation and the consistency checks (depends_on targets, volumes, networks). It is loaded
//     twice: with the variables of .env.example (every variable the file uses must be defined there), and with none
//     at all, as on a fresh clone without a .env.
//   - the Dockerfile is parsed with BuildKit's own Dockerfile parser and instruction parser (flags such as
//     RUN --mount and COPY --chmod included) and linted with its rules; the stages must chain up, and the final
//     one run as a numeric non-root user with `herald` as its entrypoint.
//   - every document of k8s/*.yaml is decoded strictly (unknown or duplicate fields are errors) into the typed API
//     objects of k8s.io/api, its metadata checked with apimachinery's validation, and the references between
//     objects checked: selectors, probe and Service ports, ConfigMap/Secret names, HPA targets, the kustomization's
//     resource list.
//
// On success it prints a JSON summary (the normalised compose project and every Kubernetes object) on stdout, for
// the Rust test in xtask/tests/deploy.rs to check Herald's own rules on; every problem found goes to stderr and the
// exit status is 1.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation/field"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// problems collects every finding, so one run reports them all.
type problems []string

func (p *problems) add(format string, args ...any) { *p = append(*p, fmt.Sprintf(format, args...)) }

type k8sObject struct {
	File      string `json:"file"`
	Kind      string `json:"kind"`
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	Object    any    `json:"object"`
}

type summary struct {
	Compose json.RawMessage `json:"compose"`
	K8s     []k8sObject     `json:"k8s"`
}

func main() {
	root := flag.String("root", ".", "the repository root (holds the Dockerfile, docker-compose.yml, .env.example and k8s/)")
	flag.Parse()
	var errs problems
	out := summary{}
	checkDockerfile(filepath.Join(*root, "Dockerfile"), &errs)
	out.Compose = checkCompose(*root, &errs)
	out.K8s = checkK8s(filepath.Join(*root, "k8s"), &errs)
	if len(errs) > 0 {
		for _, e := range errs {
			fmt.Fprintln(os.Stderr, "validate-deploy:", e)
		}
		os.Exit(1)
	}
	enc := json.NewEncoder(os.Stdout)
	if err := enc.Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, "validate-deploy: writing the summary:", err)
		os.Exit(1)
	}
}

// loadCompose loads the compose file the way `docker compose` does, with exactly the given environment (never
// the process's own, so the result does not depend on who runs the test).
func loadCompose(root string, envFiles []string, missing map[string]bool) ([]byte, error) {
	opts := []cli.ProjectOptionsFn{
		cli.WithWorkingDirectory(root),
		cli.WithName("herald"),
		cli.WithInterpolation(true),
		cli.WithNormalization(true),
		cli.WithConsistency(true),
		cli.WithResolvedPaths(true),
		cli.WithLoadOptions(func(o *loader.Options) {
			o.SkipValidation = false
			if o.Interpolate == nil || missing == nil {
				return
			}
			lookup := o.Interpolate.LookupValue
			o.Interpolate.LookupValue = func(key string) (string, bool) {
				value, ok := lookup(key)
				if !ok {
					missing[key] = true
				}
				return value, ok
			}
		}),
	}
	if len(envFiles) > 0 {
		opts = append(opts, cli.WithEnvFiles(envFiles...), cli.WithDotEnv)
	}
	options, err := cli.NewProjectOptions([]string{filepath.Join(root, "docker-compose.yml")}, opts...)
	if err != nil {
		return nil, err
	}
	// NewProjectOptions may have picked up a developer's own .env; this check uses only what it is given.
	if len(envFiles) == 0 {
		options.EnvFiles = nil
		options.Environment = map[string]string{}
	}
	project, err := options.LoadProject(context.Background())
	if err != nil {
		return nil, err
	}
	return project.MarshalJSON()
}

func checkCompose(root string, errs *problems) json.RawMessage {
	missing := map[string]bool{}
	withExample, err := loadCompose(root, []string{filepath.Join(root, ".env.example")}, missing)
	if err != nil {
		errs.add("docker-compose.yml with .env.example: %v", err)
	}
	for _, name := range sortedKeys(missing) {
		errs.add("docker-compose.yml uses ${%s}, which .env.example does not define", name)
	}
	if _, err := loadCompose(root, nil, nil); err != nil {
		errs.add("docker-compose.yml without any .env (a fresh clone): %v", err)
	}
	return withExample
}

func sortedKeys(m map[string]bool) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func newScheme() *runtime.Scheme {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, autoscalingv2.AddToScheme, batchv1.AddToScheme, policyv1.AddToScheme,
	} {
		if err := add(scheme); err != nil {
			panic(err)
		}
	}
	return scheme
}

type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace,omitempty"`
	Resources  []string `json:"resources"`
	Images     []struct {
		Name    string `json:"name"`
		NewName string `json:"newName,omitempty"`
		NewTag  string `json:"newTag,omitempty"`
	} `json:"images,omitempty"`
}

func checkK8s(dir string, errs *problems) []k8sObject {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		errs.add("k8s/: no manifests found (%v)", err)
		return nil
	}
	sort.Strings(files)
	decoder := serializer.NewCodecFactory(newScheme(), serializer.EnableStrict).UniversalDeserializer()
	var objects []k8sObject
	var manifests []string
	for _, path := range files {
		base := filepath.Base(path)
		if base == "kustomization.yaml" {
			continue
		}
		manifests = append(manifests, base)
		raw, err := os.ReadFile(path)
		if err != nil {
			errs.add("%s: %v", base, err)
			continue
		}
		reader := k8syaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(raw)))
		for doc := 1; ; doc++ {
			chunk, err := reader.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				errs.add("%s: document %d: %v", base, doc, err)
				break
			}
			if len(bytes.TrimSpace(stripComments(chunk))) == 0 {
				continue
			}
			obj, gvk, err := decoder.Decode(chunk, nil, nil)
			if err != nil {
				errs.add("%s: document %d: %v", base, doc, err)
				continue
			}
			meta, ok := obj.(metav1.Object)
			if !ok {
				errs.add("%s: document %d: %s has no object metadata", base, doc, gvk.Kind)
				continue
			}
			objects = append(objects, k8sObject{
				File: base, Kind: gvk.Kind, Name: meta.GetName(), Namespace: meta.GetNamespace(), Object: obj,
			})
		}
	}
	checkKustomization(dir, manifests, errs)
	checkObjects(objects, errs)
	return objects
}

func stripComments(doc []byte) []byte {
	var out bytes.Buffer
	for _, line := range strings.Split(string(doc), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		out.WriteString(line + "\n")
	}
	return out.Bytes()
}

func checkKustomization(dir string, manifests []string, errs *problems) {
	raw, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		errs.add("k8s/kustomization.yaml: %v", err)
		return
	}
	var k kustomization
	if err := yaml.UnmarshalStrict(raw, &k); err != nil {
		errs.add("k8s/kustomization.yaml: %v", err)
		return
	}
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		errs.add("k8s/kustomization.yaml: apiVersion/kind must be kustomize.config.k8s.io/v1beta1 Kustomization")
	}
	listed := map[string]bool{}
	for _, r := range k.Resources {
		if listed[r] {
			errs.add("k8s/kustomization.yaml lists %s twice", r)
		}
		listed[r] = true
		if _, err := os.Stat(filepath.Join(dir, r)); err != nil {
			errs.add("k8s/kustomization.yaml lists %s, which does not exist", r)
		}
	}
	for _, m := range manifests {
		if !listed[m] {
			errs.add("k8s/%s is not listed in k8s/kustomization.yaml", m)
		}
	}
}

const namespace = "herald"

func checkObjects(objects []k8sObject, errs *problems) {
	configMaps, secrets, deployments := map[string]bool{}, map[string]bool{}, map[string]*appsv1.Deployment{}
	seen := map[string]bool{}
	for _, o := range objects {
		key := o.Kind + "/" + o.Namespace + "/" + o.Name
		if seen[key] {
			errs.add("%s: %s %s is defined twice", o.File, o.Kind, o.Name)
		}
		seen[key] = true
		meta := o.Object.(metav1.Object)
		objectMeta := metav1.ObjectMeta{
			Name: meta.GetName(), Namespace: meta.GetNamespace(), Labels: meta.GetLabels(),
			Annotations: meta.GetAnnotations(),
		}
		nameFn := apivalidation.NameIsDNSSubdomain
		requiresNamespace := true
		switch o.Kind {
		case "Namespace":
			nameFn, requiresNamespace = apivalidation.NameIsDNSLabel, false
		case "Service":
			nameFn = apivalidation.NameIsDNS1035Label
		}
		for _, e := range apivalidation.ValidateObjectMeta(&objectMeta, requiresNamespace, nameFn, field.NewPath("metadata")) {
			errs.add("%s: %s %s: %v", o.File, o.Kind, o.Name, e)
		}
		if requiresNamespace && o.Namespace != namespace {
			errs.add("%s: %s %s must be in namespace %q", o.File, o.Kind, o.Name, namespace)
		}
		switch obj := o.Object.(type) {
		case *corev1.ConfigMap:
			configMaps[obj.Name] = true
		case *corev1.Secret:
			secrets[obj.Name] = true
		case *appsv1.Deployment:
			deployments[obj.Name] = obj
		}
	}
	for _, o := range objects {
		switch obj := o.Object.(type) {
		case *appsv1.Deployment:
			checkDeployment(o.File, obj, configMaps, secrets, errs)
		case *corev1.Service:
			checkService(o.File, obj, deployments, errs)
		case *autoscalingv2.HorizontalPodAutoscaler:
			checkHPA(o.File, obj, deployments, errs)
		case *policyv1.PodDisruptionBudget:
			if !selectsAny(obj.Spec.Selector, deployments) {
				errs.add("%s: PodDisruptionBudget %s selects no Deployment's pods", o.File, obj.Name)
			}
		}
	}
}

func selectsAny(selector *metav1.LabelSelector, deployments map[string]*appsv1.Deployment) bool {
	sel, err := metav1.LabelSelectorAsSelector(selector)
	if err != nil || sel.Empty() {
		return false
	}
	for _, d := range deployments {
		if sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			return true
		}
	}
	return false
}

func checkDeployment(file string, d *appsv1.Deployment, configMaps, secrets map[string]bool, errs *problems) {
	where := fmt.Sprintf("%s: Deployment %s", file, d.Name)
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil || sel.Empty() {
		errs.add("%s: needs a non-empty selector (%v)", where, err)
	} else if !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		errs.add("%s: its selector does not match its pod template's labels", where)
	}
	pod := d.Spec.Template.Spec
	if pod.SecurityContext == nil || pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot {
		errs.add("%s: the pod must set securityContext.runAsNonRoot: true", where)
	}
	if len(pod.Containers) == 0 {
		errs.add("%s: no containers", where)
	}
	for _, c := range pod.Containers {
		cwhere := fmt.Sprintf("%s container %s", where, c.Name)
		if c.Image == "" {
			errs.add("%s: no image", cwhere)
		}
		ports := map[string]int32{}
		for _, p := range c.Ports {
			ports[p.Name] = p.ContainerPort
		}
		checkProbe(cwhere+" livenessProbe", c.LivenessProbe, "/api/health", ports, errs)
		checkProbe(cwhere+" readinessProbe", c.ReadinessProbe, "/api/ready", ports, errs)
		for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			req, hasReq := c.Resources.Requests[res]
			lim, hasLim := c.Resources.Limits[res]
			if !hasReq || !hasLim {
				errs.add("%s: resources.requests and resources.limits must both set %s", cwhere, res)
			} else if req.Cmp(lim) > 0 {
				errs.add("%s: the %s request %s is above its limit %s", cwhere, res, req.String(), lim.String())
			}
		}
		for _, from := range c.EnvFrom {
			if from.ConfigMapRef != nil && !configMaps[from.ConfigMapRef.Name] {
				errs.add("%s: envFrom names ConfigMap %s, which is not defined", cwhere, from.ConfigMapRef.Name)
			}
			if from.SecretRef != nil && !secrets[from.SecretRef.Name] {
				errs.add("%s: envFrom names Secret %s, which is not defined", cwhere, from.SecretRef.Name)
			}
		}
		for _, env := range c.Env {
			if env.ValueFrom == nil {
				continue
			}
			if ref := env.ValueFrom.SecretKeyRef; ref != nil && !secrets[ref.Name] {
				errs.add("%s: env %s names Secret %s, which is not defined", cwhere, env.Name, ref.Name)
			}
			if ref := env.ValueFrom.ConfigMapKeyRef; ref != nil && !configMaps[ref.Name] {
				errs.add("%s: env %s names ConfigMap %s, which is not defined", cwhere, env.Name, ref.Name)
			}
		}
	}
}

func checkProbe(where string, probe *corev1.Probe, path string, ports map[string]int32, errs *problems) {
	if probe == nil || probe.HTTPGet == nil {
		errs.add("%s: must be an httpGet probe on %s", where, path)
		return
	}
	if probe.HTTPGet.Path != path {
		errs.add("%s: path is %s, expected %s", where, probe.HTTPGet.Path, path)
	}
	if !portDefined(probe.HTTPGet.Port, ports) {
		errs.add("%s: port %s is not one of the container's ports", where, probe.HTTPGet.Port.String())
	}
}

func portDefined(port intstr.IntOrString, ports map[string]int32) bool {
	if port.Type == intstr.String {
		_, ok := ports[port.StrVal]
		return ok
	}
	for _, p := range ports {
		if p == port.IntVal {
			return true
		}
	}
	return false
}

func checkService(file string, s *corev1.Service, deployments map[string]*appsv1.Deployment, errs *problems) {
	where := fmt.Sprintf("%s: Service %s", file, s.Name)
	if len(s.Spec.Selector) == 0 {
		errs.add("%s: needs a selector", where)
		return
	}
	sel := labels.SelectorFromSet(s.Spec.Selector)
	matched := false
	for _, d := range deployments {
		if !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			continue
		}
		matched = true
		for _, c := range d.Spec.Template.Spec.Containers {
			ports := map[string]int32{}
			for _, p := range c.Ports {
				ports[p.Name] = p.ContainerPort
			}
			for _, p := range s.Spec.Ports {
				if !portDefined(p.TargetPort, ports) {
					errs.add("%s: targetPort %s is not a port of Deployment %s", where, p.TargetPort.String(), d.Name)
				}
			}
		}
	}
	if !matched {
		errs.add("%s: its selector matches no Deployment's pods", where)
	}
}

func checkHPA(file string, h *autoscalingv2.HorizontalPodAutoscaler, deployments map[string]*appsv1.Deployment, errs *problems) {
	where := fmt.Sprintf("%s: HorizontalPodAutoscaler %s", file, h.Name)
	ref := h.Spec.ScaleTargetRef
	if ref.Kind != "Deployment" || ref.APIVersion != "apps/v1" || deployments[ref.Name] == nil {
		errs.add("%s: scaleTargetRef must name a Deployment (apps/v1) defined here, not %s %s %s", where, ref.APIVersion, ref.Kind, ref.Name)
	}
	if h.Spec.MinReplicas == nil || *h.Spec.MinReplicas < 1 || *h.Spec.MinReplicas > h.Spec.MaxReplicas {
		errs.add("%s: needs 1 <= minReplicas <= maxReplicas", where)
	}
	if len(h.Spec.Metrics) == 0 {
		errs.add("%s: needs at least one metric", where)
	}
	for _, m := range h.Spec.Metrics {
		if m.Type == autoscalingv2.ResourceMetricSourceType && m.Resource != nil {
			if d := deployments[ref.Name]; d != nil {
				for _, c := range d.Spec.Template.Spec.Containers {
					if _, ok := c.Resources.Requests[m.Resource.Name]; !ok {
						errs.add("%s: scales on %s, which container %s does not request", where, m.Resource.Name, c.Name)
					}
				}
			}
		}
	}
}

func checkDockerfile(path string, errs *problems) {
	raw, err := os.ReadFile(path)
	if err != nil {
		errs.add("Dockerfile: %v", err)
		return
	}
	result, err := parser.Parse(bytes.NewReader(raw))
	if err != nil {
		errs.add("Dockerfile: %v", err)
		return
	}
	for _, w := range result.Warnings {
		errs.add("Dockerfile: %s", w.Short)
	}
	lint := linter.New(&linter.Config{
		Warn: func(rule, description, _, message string, location []parser.Range) {
			line := 0
			if len(location) > 0 {
				line = location[0].Start.Line
			}
			errs.add("Dockerfile:%d: %s: %s", line, rule, message)
		},
	})
	stages, _, err := instructions.Parse(result.AST, lint)
	if err != nil {
		errs.add("Dockerfile: %v", err)
		return
	}
	if len(stages) < 2 {
		errs.add("Dockerfile: expected a multi-stage build")
		return
	}
	named := map[string]bool{}
	identity := func(word string) (string, error) { return word, nil }
	for _, stage := range stages {
		for _, cmd := range stage.Commands {
			// RUN's --mount options are checked only once expanded, as the build would.
			if run, ok := cmd.(*instructions.RunCommand); ok {
				if err := run.Expand(identity); err != nil {
					errs.add("Dockerfile:%d: RUN: %v", run.Location()[0].Start.Line, err)
				}
			}
			if copyCmd, ok := cmd.(*instructions.CopyCommand); ok && copyCmd.From != "" && !named[copyCmd.From] {
				errs.add("Dockerfile: stage %s copies from %q, which is not an earlier stage", stage.Name, copyCmd.From)
			}
		}
		named[stage.Name] = true
	}
	final := stages[len(stages)-1]
	var user string
	var entrypoint []string
	for _, cmd := range final.Commands {
		switch c := cmd.(type) {
		case *instructions.UserCommand:
			user = c.User
		case *instructions.EntrypointCommand:
			entrypoint = c.CmdLine
		}
	}
	uid := strings.SplitN(user, ":", 2)[0]
	if uid == "" || uid == "0" || uid == "root" || strings.Trim(uid, "0123456789") != "" {
		errs.add("Dockerfile: the final stage must run as a numeric non-root USER (Kubernetes' runAsNonRoot checks it), not %q", user)
	}
	if len(entrypoint) != 1 || entrypoint[0] != "herald" {
		errs.add("Dockerfile: the final stage's ENTRYPOINT must be [\"herald\"], not %q", entrypoint)
	}
}

// Package validate checks the Kubernetes manifests in deploy/kubernetes and
// the Dockerfile against each other, against the bridge's configuration
// package and against what the binary does on SIGTERM.
//
// It is a separate module so that the Kubernetes API packages never reach
// the bridge's go.mod. Every manifest is decoded strictly into its typed API
// object (unknown or misspelled fields fail), then [Checks] asserts the
// invariants a working deployment relies on. Run it with
//
//	make deploy-check
package validate

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/gqlbridge/gqlbridge/config"
)

// What the binary does after SIGTERM besides drain_grace (cmd/bridge/serve.go,
// wiring/wiring.go, bridge.Server.Drain): it waits up to 5s for the stream handlers to return
// (one blocked sending to a caller that stopped reading cannot until the gRPC
// server stops), the upstream sockets close with 1001 (session/internal/wsconn: up to
// 5s to write the close frame and 5s to wait for the peer's, plus 1s for the
// legacy connection_terminate), gRPC GracefulStop is forced after 5s, and the
// admin server gets 2s to shut down.
const (
	StreamsEndBound    = 5 * time.Second
	UpstreamCloseBound = 11 * time.Second
	GracefulStopBound  = 5 * time.Second
	AdminShutdownBound = 2 * time.Second
)

// Names the manifests and the binary agree on.
const (
	ContainerName = "bridge"
	GRPCPortName  = "grpc"
	AdminPortName = "admin"
	ConfigKey     = "config.yaml"
)

// Bundle is every manifest of deploy/kubernetes, decoded, plus the Dockerfile.
type Bundle struct {
	ConfigMap      *corev1.ConfigMap
	Secret         *corev1.Secret
	ServiceAccount *corev1.ServiceAccount
	Service        *corev1.Service
	Deployment     *appsv1.Deployment
	PDB            *policyv1.PodDisruptionBudget
	HPA            *autoscalingv2.HorizontalPodAutoscaler
	Dockerfile     string
}

type manifest struct {
	file       string
	apiVersion string
	kind       string
	target     func(b *Bundle) any
}

var manifests = []manifest{
	{"configmap.yaml", "v1", "ConfigMap", func(b *Bundle) any { b.ConfigMap = &corev1.ConfigMap{}; return b.ConfigMap }},
	{"secret.yaml", "v1", "Secret", func(b *Bundle) any { b.Secret = &corev1.Secret{}; return b.Secret }},
	{"serviceaccount.yaml", "v1", "ServiceAccount", func(b *Bundle) any { b.ServiceAccount = &corev1.ServiceAccount{}; return b.ServiceAccount }},
	{"service.yaml", "v1", "Service", func(b *Bundle) any { b.Service = &corev1.Service{}; return b.Service }},
	{"deployment.yaml", "apps/v1", "Deployment", func(b *Bundle) any { b.Deployment = &appsv1.Deployment{}; return b.Deployment }},
	{"pdb.yaml", "policy/v1", "PodDisruptionBudget", func(b *Bundle) any { b.PDB = &policyv1.PodDisruptionBudget{}; return b.PDB }},
	{"hpa.yaml", "autoscaling/v2", "HorizontalPodAutoscaler", func(b *Bundle) any {
		b.HPA = &autoscalingv2.HorizontalPodAutoscaler{}
		return b.HPA
	}},
}

var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*$`)

// Load decodes every manifest in dir strictly into its typed object and
// reads the Dockerfile. A YAML file in dir that Load does not know, a file
// with more than one object, an unknown field or a wrong kind is an error.
func Load(dir, dockerfile string) (*Bundle, error) {
	b := &Bundle{}
	known := map[string]bool{}
	for _, m := range manifests {
		known[m.file] = true
		raw, err := os.ReadFile(filepath.Join(dir, m.file))
		if err != nil {
			return nil, err
		}
		var docs [][]byte
		for _, d := range docSeparator.Split(string(raw), -1) {
			if hasContent(d) {
				docs = append(docs, []byte(d))
			}
		}
		if len(docs) != 1 {
			return nil, fmt.Errorf("%s: holds %d objects; keep one object per file", m.file, len(docs))
		}
		target := m.target(b)
		if err := yaml.UnmarshalStrict(docs[0], target); err != nil {
			return nil, fmt.Errorf("%s: %w", m.file, err)
		}
		// yaml.UnmarshalStrict matches field names case-insensitively
		// (encoding/json); the API server does not, so a second, case-
		// sensitive pass as the API machinery does it.
		js, err := yaml.YAMLToJSONStrict(docs[0])
		if err != nil {
			return nil, fmt.Errorf("%s: %w", m.file, err)
		}
		again := reflect.New(reflect.TypeOf(target).Elem()).Interface()
		strictErrs, err := sigsjson.UnmarshalStrict(js, again, sigsjson.DisallowDuplicateFields, sigsjson.DisallowUnknownFields)
		if err == nil {
			err = errors.Join(strictErrs...)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", m.file, err)
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(docs[0], &tm); err != nil {
			return nil, fmt.Errorf("%s: %w", m.file, err)
		}
		if tm.APIVersion != m.apiVersion || tm.Kind != m.kind {
			return nil, fmt.Errorf("%s: is %s %s, want %s %s", m.file, tm.APIVersion, tm.Kind, m.apiVersion, m.kind)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		if ext := filepath.Ext(e.Name()); (ext == ".yaml" || ext == ".yml") && !known[e.Name()] {
			return nil, fmt.Errorf("%s: not validated by deploy/validate; add it to its manifest table", e.Name())
		}
	}
	df, err := os.ReadFile(dockerfile)
	if err != nil {
		return nil, err
	}
	b.Dockerfile = string(df)
	return b, nil
}

func hasContent(doc string) bool {
	for l := range strings.Lines(doc) {
		if t := strings.TrimSpace(l); t != "" && !strings.HasPrefix(t, "#") {
			return true
		}
	}
	return false
}

// Check is one invariant.
type Check struct {
	Name string
	Run  func(b *Bundle) error
}

// Checks are the invariants, in the order they are reported.
var Checks = []Check{
	{"NamespaceAgnostic", checkNamespaceAgnostic},
	{"ConfigParses", checkConfigParses},
	{"ConfigListensOnContainerPorts", checkListenAddresses},
	{"ArgsReferenceConfigMapMount", checkConfigMount},
	{"TokenFilesMountedFromSecret", checkTokenMounts},
	{"ConfigFilesMounted", checkConfigFiles},
	{"DeploymentSelectorMatchesPods", checkDeploymentSelector},
	{"ServiceHeadlessAndSelectsPods", checkService},
	{"PDBSelectsPods", checkPDB},
	{"HPATargetsDeployment", checkHPA},
	{"Probes", checkProbes},
	{"TerminationBudget", checkTerminationBudget},
	{"SecurityContext", checkSecurity},
	{"Resources", checkResources},
	{"TopologySpread", checkTopologySpread},
	{"PrometheusAnnotations", checkPrometheus},
	{"ServiceAccount", checkServiceAccount},
	{"SecretIsPlaceholder", checkSecretPlaceholder},
	{"Dockerfile", checkDockerfile},
}

// Container returns the bridge container of the Deployment.
func (b *Bundle) Container() (*corev1.Container, error) {
	cs := b.Deployment.Spec.Template.Spec.Containers
	for i := range cs {
		if cs[i].Name == ContainerName {
			return &cs[i], nil
		}
	}
	return nil, fmt.Errorf("deployment.yaml: no container named %q", ContainerName)
}

// Config parses the ConfigMap's config.yaml with the bridge's own parser;
// ${VAR} resolves from the container's env (valueFrom counts as set).
func (b *Bundle) Config() (*config.Config, error) {
	raw, ok := b.ConfigMap.Data[ConfigKey]
	if !ok {
		return nil, fmt.Errorf("configmap.yaml: no data key %q", ConfigKey)
	}
	env := map[string]string{}
	if c, err := b.Container(); err == nil {
		for _, e := range c.Env {
			v := e.Value
			if e.ValueFrom != nil {
				v = "from-" + e.Name
			}
			env[e.Name] = v
		}
	}
	cfg, err := config.Parse([]byte(raw), func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		return nil, fmt.Errorf("configmap.yaml %s: %w", ConfigKey, err)
	}
	return cfg, nil
}

// ContainerPort finds a port of the bridge container by name or number.
func (b *Bundle) ContainerPort(p intstr.IntOrString) (*corev1.ContainerPort, error) {
	c, err := b.Container()
	if err != nil {
		return nil, err
	}
	for i := range c.Ports {
		cp := &c.Ports[i]
		if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
			return cp, nil
		}
	}
	return nil, fmt.Errorf("container %s has no port %s", c.Name, p.String())
}

func (b *Bundle) namedPort(name string) (int32, error) {
	cp, err := b.ContainerPort(intstr.FromString(name))
	if err != nil {
		return 0, err
	}
	return cp.ContainerPort, nil
}

// ConfigPath is the --config argument of the container.
func (b *Bundle) ConfigPath() (string, error) {
	c, err := b.Container()
	if err != nil {
		return "", err
	}
	if len(c.Command) > 0 {
		return "", errors.New("deployment.yaml: container sets command; leave the image's ENTRYPOINT /bridge and use args")
	}
	if len(c.Args) == 0 || c.Args[0] != "serve" {
		return "", fmt.Errorf("deployment.yaml: args %q must start with serve", c.Args)
	}
	for i, a := range c.Args {
		if v, ok := strings.CutPrefix(a, "--config="); ok {
			return v, nil
		}
		if a == "--config" && i+1 < len(c.Args) {
			return c.Args[i+1], nil
		}
	}
	return "", fmt.Errorf("deployment.yaml: args %q have no --config", c.Args)
}

func (b *Bundle) podLabels() labels.Set { return labels.Set(b.Deployment.Spec.Template.Labels) }

func selects(sel *metav1.LabelSelector, set labels.Set) error {
	if sel == nil || (len(sel.MatchLabels) == 0 && len(sel.MatchExpressions) == 0) {
		return errors.New("selector is empty")
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return err
	}
	if !s.Matches(set) {
		return fmt.Errorf("selector %s does not match the pod labels %s", s, set)
	}
	return nil
}

func checkNamespaceAgnostic(b *Bundle) error {
	for _, m := range []metav1.Object{b.ConfigMap, b.Secret, b.ServiceAccount, b.Service, b.Deployment, b.PDB, b.HPA} {
		if m.GetNamespace() != "" {
			return fmt.Errorf("%s sets metadata.namespace %q; leave it to kubectl -n / kustomize", m.GetName(), m.GetNamespace())
		}
	}
	return nil
}

func checkConfigParses(b *Bundle) error {
	_, err := b.Config()
	return err
}

func checkListenAddresses(b *Bundle) error {
	cfg, err := b.Config()
	if err != nil {
		return err
	}
	for _, l := range []struct{ key, addr, port string }{
		{"server.grpc_address", cfg.Server.GRPCAddress, GRPCPortName},
		{"server.admin_address", cfg.Server.AdminAddress, AdminPortName},
	} {
		host, port, err := net.SplitHostPort(l.addr)
		if err != nil {
			return fmt.Errorf("%s %q: %v (the admin server is needed for probes and metrics)", l.key, l.addr, err)
		}
		if host == "localhost" || (net.ParseIP(host) != nil && net.ParseIP(host).IsLoopback()) {
			return fmt.Errorf("%s %q listens on loopback only: kubelet probes and other pods cannot reach it; use %q", l.key, l.addr, ":"+port)
		}
		want, err := b.namedPort(l.port)
		if err != nil {
			return err
		}
		if port != strconv.Itoa(int(want)) {
			return fmt.Errorf("%s listens on port %s but container port %q is %d", l.key, port, l.port, want)
		}
	}
	return nil
}

// mountFor finds the volume mounted at the directory holding file.
func (b *Bundle) mountFor(file string) (*corev1.VolumeMount, *corev1.Volume, error) {
	c, err := b.Container()
	if err != nil {
		return nil, nil, err
	}
	var best *corev1.VolumeMount
	for i := range c.VolumeMounts {
		m := &c.VolumeMounts[i]
		if strings.HasPrefix(file, strings.TrimSuffix(m.MountPath, "/")+"/") && (best == nil || len(m.MountPath) > len(best.MountPath)) {
			best = m
		}
	}
	if best == nil {
		return nil, nil, fmt.Errorf("no volume is mounted above %s", file)
	}
	for i := range b.Deployment.Spec.Template.Spec.Volumes {
		if v := &b.Deployment.Spec.Template.Spec.Volumes[i]; v.Name == best.Name {
			return best, v, nil
		}
	}
	return nil, nil, fmt.Errorf("volume mount %s names no volume", best.Name)
}

// itemKey maps a file name inside a volume to its key: through items when
// they are listed, else the key is the file name.
func itemKey(items []corev1.KeyToPath, rel string) (string, bool) {
	if len(items) == 0 {
		return rel, true
	}
	for _, it := range items {
		if path.Clean(it.Path) == rel {
			return it.Key, true
		}
	}
	return "", false
}

func checkConfigMount(b *Bundle) error {
	p, err := b.ConfigPath()
	if err != nil {
		return err
	}
	m, v, err := b.mountFor(p)
	if err != nil {
		return fmt.Errorf("--config %s: %w", p, err)
	}
	if v.ConfigMap == nil || v.ConfigMap.Name != b.ConfigMap.Name {
		return fmt.Errorf("--config %s: the volume mounted at %s is not ConfigMap %s", p, m.MountPath, b.ConfigMap.Name)
	}
	rel := strings.TrimPrefix(p, strings.TrimSuffix(m.MountPath, "/")+"/")
	key, ok := itemKey(v.ConfigMap.Items, rel)
	if !ok {
		return fmt.Errorf("--config %s: ConfigMap volume %s projects no item at %s", p, v.Name, rel)
	}
	if key != ConfigKey {
		return fmt.Errorf("--config %s: maps to ConfigMap key %q, want %q", p, key, ConfigKey)
	}
	if _, ok := b.ConfigMap.Data[key]; !ok {
		return fmt.Errorf("--config %s: ConfigMap %s has no key %q", p, b.ConfigMap.Name, key)
	}
	return nil
}

func checkTokenMounts(b *Bundle) error {
	cfg, err := b.Config()
	if err != nil {
		return err
	}
	n := 0
	for _, name := range cfg.Names() {
		u := cfg.Upstreams[name]
		if u.Token == nil || u.Token.File == "" {
			continue
		}
		n++
		file := u.Token.File
		m, v, err := b.mountFor(file)
		if err != nil {
			return fmt.Errorf("upstreams.%s.token.file %s: %w", name, file, err)
		}
		if m.SubPath != "" || m.SubPathExpr != "" {
			return fmt.Errorf("upstreams.%s.token.file: mount %s uses subPath; rotated Secrets never reach subPath mounts", name, m.Name)
		}
		rel := strings.TrimPrefix(file, strings.TrimSuffix(m.MountPath, "/")+"/")
		var secretName, key string
		switch {
		case v.Secret != nil:
			k, ok := itemKey(v.Secret.Items, rel)
			if !ok {
				return fmt.Errorf("upstreams.%s.token.file %s: secret volume %s projects nothing at %s", name, file, v.Name, rel)
			}
			secretName, key = v.Secret.SecretName, k
		case v.Projected != nil:
			for _, s := range v.Projected.Sources {
				if s.Secret == nil {
					continue
				}
				if k, ok := itemKey(s.Secret.Items, rel); ok {
					secretName, key = s.Secret.Name, k
					break
				}
			}
			if secretName == "" {
				return fmt.Errorf("upstreams.%s.token.file %s: projected volume %s projects no secret item at %s", name, file, v.Name, rel)
			}
		default:
			return fmt.Errorf("upstreams.%s.token.file %s: volume %s is neither a secret nor a projected volume", name, file, v.Name)
		}
		if secretName != b.Secret.Name {
			return fmt.Errorf("upstreams.%s.token.file: volume %s mounts Secret %q, but secret.yaml is %q", name, v.Name, secretName, b.Secret.Name)
		}
		_, inData := b.Secret.Data[key]
		_, inString := b.Secret.StringData[key]
		if !inData && !inString {
			return fmt.Errorf("upstreams.%s.token.file: Secret %s has no key %q", name, secretName, key)
		}
	}
	if n == 0 {
		return errors.New("configmap.yaml: no upstream reads its token from a file; the example should show the Secret mount")
	}
	return nil
}

// ConfigFiles lists every file the configuration names (yaml keys "file"
// and "*_file", wherever they are, plus token.command[0]) by key path. It
// walks the config types by reflection so keys added later are covered.
func ConfigFiles(cfg *config.Config) map[string]string {
	out := map[string]string{}
	var walk func(v reflect.Value, path string)
	walk = func(v reflect.Value, path string) {
		switch v.Kind() {
		case reflect.Pointer, reflect.Interface:
			if !v.IsNil() {
				walk(v.Elem(), path)
			}
		case reflect.Map:
			for _, k := range v.MapKeys() {
				walk(v.MapIndex(k), path+"."+fmt.Sprint(k.Interface()))
			}
		case reflect.Struct:
			for i := 0; i < v.NumField(); i++ {
				f := v.Type().Field(i)
				if !f.IsExported() {
					continue
				}
				key, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
				fv := v.Field(i)
				switch {
				case fv.Kind() == reflect.String && (key == "file" || strings.HasSuffix(key, "_file")):
					if fv.String() != "" {
						out[strings.TrimPrefix(path+"."+key, ".")] = fv.String()
					}
				case key == "command" && fv.Kind() == reflect.Slice && fv.Len() > 0:
					out[strings.TrimPrefix(path+"."+key, ".")+"[0]"] = fv.Index(0).String()
				default:
					walk(fv, path+"."+key)
				}
			}
		}
	}
	walk(reflect.ValueOf(cfg).Elem(), "")
	return out
}

// rereadFile reports whether the bridge reads the file of a ConfigFiles
// key again while it runs (docs/deploy.md): every file but an upstream's
// tls.ca_file and a token command's program.
func rereadFile(key string) bool {
	return !strings.HasSuffix(key, "]") && !(strings.HasPrefix(key, "upstreams.") && strings.HasSuffix(key, ".tls.ca_file"))
}

// checkConfigFiles: every file the config names exists in the pod. The
// image holds nothing but /bridge (no shell, no tools, no CA bundle beyond
// distroless's), so each must come from a mounted volume, and a file from a
// ConfigMap or Secret volume must be projected from a key that exists.
func checkConfigFiles(b *Bundle) error {
	cfg, err := b.Config()
	if err != nil {
		return err
	}
	files := ConfigFiles(cfg)
	for _, key := range slices.Sorted(maps.Keys(files)) {
		file := files[key]
		if !path.IsAbs(file) {
			return fmt.Errorf("%s %q: use an absolute path inside a mounted volume", key, file)
		}
		m, v, err := b.mountFor(file)
		if err != nil {
			return fmt.Errorf("%s %s: %w (the image contains only /bridge)", key, file, err)
		}
		if rereadFile(key) && (m.SubPath != "" || m.SubPathExpr != "") {
			return fmt.Errorf("%s %s: mount %s uses subPath; the bridge reads this file again to pick up a rotated one, and updates never reach subPath mounts", key, file, m.Name)
		}
		rel := strings.TrimPrefix(file, strings.TrimSuffix(m.MountPath, "/")+"/")
		check := func(kind, name string, items []corev1.KeyToPath, has func(string) bool) error {
			k, ok := itemKey(items, rel)
			if !ok {
				return fmt.Errorf("%s %s: %s %s projects nothing at %s", key, file, kind, name, rel)
			}
			if has != nil && !has(k) {
				return fmt.Errorf("%s %s: %s %s has no key %q", key, file, kind, name, k)
			}
			return nil
		}
		secretHas := func(name string) func(string) bool {
			if name != b.Secret.Name {
				return nil // managed outside this directory
			}
			return func(k string) bool {
				_, a := b.Secret.Data[k]
				_, s := b.Secret.StringData[k]
				return a || s
			}
		}
		cmHas := func(name string) func(string) bool {
			if name != b.ConfigMap.Name {
				return nil
			}
			return func(k string) bool { _, ok := b.ConfigMap.Data[k]; return ok }
		}
		switch {
		case v.Secret != nil:
			err = check("Secret", v.Secret.SecretName, v.Secret.Items, secretHas(v.Secret.SecretName))
		case v.ConfigMap != nil:
			err = check("ConfigMap", v.ConfigMap.Name, v.ConfigMap.Items, cmHas(v.ConfigMap.Name))
		case v.Projected != nil:
			err = fmt.Errorf("%s %s: projected volume %s projects nothing at %s", key, file, v.Name, rel)
			for _, src := range v.Projected.Sources {
				var e error
				switch {
				case src.Secret != nil:
					e = check("Secret", src.Secret.Name, src.Secret.Items, secretHas(src.Secret.Name))
				case src.ConfigMap != nil:
					e = check("ConfigMap", src.ConfigMap.Name, src.ConfigMap.Items, cmHas(src.ConfigMap.Name))
				case src.ServiceAccountToken != nil:
					if path.Clean(src.ServiceAccountToken.Path) == rel {
						e = nil
					} else {
						continue
					}
				default:
					continue
				}
				if e == nil || !strings.Contains(e.Error(), "projects nothing") {
					err = e
					break
				}
			}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func checkDeploymentSelector(b *Bundle) error {
	if err := selects(b.Deployment.Spec.Selector, b.podLabels()); err != nil {
		return fmt.Errorf("deployment.yaml spec.selector: %w", err)
	}
	return nil
}

func checkService(b *Bundle) error {
	s := b.Service.Spec
	if s.ClusterIP != corev1.ClusterIPNone {
		return fmt.Errorf("service.yaml: clusterIP is %q; it must be None (headless) for gRPC client-side round robin", s.ClusterIP)
	}
	if s.PublishNotReadyAddresses {
		return errors.New("service.yaml: publishNotReadyAddresses would put draining pods in DNS")
	}
	if len(s.Selector) == 0 || !labels.SelectorFromSet(s.Selector).Matches(b.podLabels()) {
		return fmt.Errorf("service.yaml: selector %v does not match the pod labels %v", s.Selector, b.podLabels())
	}
	want := map[string]string{"grpc": GRPCPortName, "metrics": AdminPortName}
	for _, p := range s.Ports {
		cp, err := b.ContainerPort(p.TargetPort)
		if err != nil {
			return fmt.Errorf("service.yaml port %s: %w", p.Name, err)
		}
		if w, ok := want[p.Name]; ok {
			if cp.Name != w {
				return fmt.Errorf("service.yaml port %s targets container port %s, want %s", p.Name, cp.Name, w)
			}
			delete(want, p.Name)
		}
		if p.Name == "grpc" && (p.AppProtocol == nil || *p.AppProtocol != "grpc") {
			return errors.New("service.yaml port grpc: set appProtocol: grpc")
		}
	}
	if len(want) > 0 {
		return fmt.Errorf("service.yaml: missing ports %v", slices.Sorted(maps.Keys(want)))
	}
	return nil
}

func replicas(d *appsv1.Deployment) int32 {
	if d.Spec.Replicas == nil {
		return 1
	}
	return *d.Spec.Replicas
}

func checkPDB(b *Bundle) error {
	if err := selects(b.PDB.Spec.Selector, b.podLabels()); err != nil {
		return fmt.Errorf("pdb.yaml: %w", err)
	}
	mu := b.PDB.Spec.MaxUnavailable
	if mu == nil || mu.Type != intstr.Int || mu.IntVal != 1 {
		return fmt.Errorf("pdb.yaml: maxUnavailable must be 1, is %v", mu)
	}
	if b.PDB.Spec.MinAvailable != nil {
		return errors.New("pdb.yaml: set maxUnavailable only, not minAvailable")
	}
	if replicas(b.Deployment) <= mu.IntVal {
		return fmt.Errorf("pdb.yaml: maxUnavailable %d with %d replicas allows a full outage", mu.IntVal, replicas(b.Deployment))
	}
	return nil
}

func checkHPA(b *Bundle) error {
	h := b.HPA.Spec
	ref := h.ScaleTargetRef
	if ref.APIVersion != "apps/v1" || ref.Kind != "Deployment" || ref.Name != b.Deployment.Name {
		return fmt.Errorf("hpa.yaml: scaleTargetRef %s %s/%s, want apps/v1 Deployment/%s", ref.APIVersion, ref.Kind, ref.Name, b.Deployment.Name)
	}
	lo := int32(1)
	if h.MinReplicas != nil {
		lo = *h.MinReplicas
	}
	if lo < 2 {
		return fmt.Errorf("hpa.yaml: minReplicas %d; keep at least 2 so a drain always has somewhere to go", lo)
	}
	if r := replicas(b.Deployment); r < lo || r > h.MaxReplicas {
		return fmt.Errorf("hpa.yaml: deployment replicas %d outside [minReplicas %d, maxReplicas %d]", r, lo, h.MaxReplicas)
	}
	c, err := b.Container()
	if err != nil {
		return err
	}
	cpu := false
	for _, m := range h.Metrics {
		if m.Type != autoscalingv2.ResourceMetricSourceType || m.Resource == nil {
			continue
		}
		cpu = cpu || m.Resource.Name == corev1.ResourceCPU
		if m.Resource.Target.Type == autoscalingv2.UtilizationMetricType {
			if _, ok := c.Resources.Requests[m.Resource.Name]; !ok {
				return fmt.Errorf("hpa.yaml: scales on %s utilization but the container requests no %s", m.Resource.Name, m.Resource.Name)
			}
		}
	}
	if !cpu {
		return errors.New("hpa.yaml: no cpu resource metric")
	}
	return nil
}

func checkProbes(b *Bundle) error {
	c, err := b.Container()
	if err != nil {
		return err
	}
	for _, p := range []struct {
		what  string
		probe *corev1.Probe
		path  string
	}{{"readinessProbe", c.ReadinessProbe, "/readyz"}, {"livenessProbe", c.LivenessProbe, "/healthz"}} {
		if p.probe == nil {
			return fmt.Errorf("container %s has no %s", c.Name, p.what)
		}
		if p.probe.GRPC != nil && p.what == "livenessProbe" {
			return errors.New("livenessProbe uses the gRPC health service, which answers NOT_SERVING while draining: use httpGet /healthz on the admin port")
		}
		g := p.probe.HTTPGet
		if g == nil {
			return fmt.Errorf("%s: use httpGet %s on the admin port", p.what, p.path)
		}
		if g.Path != p.path {
			return fmt.Errorf("%s: path %q, want %q", p.what, g.Path, p.path)
		}
		cp, err := b.ContainerPort(g.Port)
		if err != nil {
			return fmt.Errorf("%s: %w", p.what, err)
		}
		if cp.Name != AdminPortName {
			return fmt.Errorf("%s: port %s is not the admin port", p.what, g.Port.String())
		}
	}
	return nil
}

func checkTerminationBudget(b *Bundle) error {
	cfg, err := b.Config()
	if err != nil {
		return err
	}
	c, err := b.Container()
	if err != nil {
		return err
	}
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil {
		return errors.New("container has no preStop hook: endpoints must be removed before the drain starts")
	}
	ps := c.Lifecycle.PreStop
	if ps.Sleep == nil || ps.Exec != nil || ps.HTTPGet != nil {
		return errors.New("preStop must be the native sleep action: the distroless image has no shell for exec")
	}
	if ps.Sleep.Seconds < 1 {
		return fmt.Errorf("preStop sleep %ds is too short for endpoints to update", ps.Sleep.Seconds)
	}
	gp := b.Deployment.Spec.Template.Spec.TerminationGracePeriodSeconds
	if gp == nil {
		return errors.New("deployment.yaml: set terminationGracePeriodSeconds explicitly")
	}
	preStop := time.Duration(ps.Sleep.Seconds) * time.Second
	need := preStop + cfg.Server.DrainGrace + StreamsEndBound + UpstreamCloseBound + GracefulStopBound + AdminShutdownBound
	if have := time.Duration(*gp) * time.Second; have < need {
		return fmt.Errorf("terminationGracePeriodSeconds %s < preStop %s + drain_grace %s + streams ending %s + upstream close %s + GracefulStop %s + admin shutdown %s = %s",
			have, preStop, cfg.Server.DrainGrace, StreamsEndBound, UpstreamCloseBound, GracefulStopBound, AdminShutdownBound, need)
	}
	return nil
}

func checkSecurity(b *Bundle) error {
	ps := b.Deployment.Spec.Template.Spec.SecurityContext
	c, err := b.Container()
	if err != nil {
		return err
	}
	sc := c.SecurityContext
	if sc == nil {
		return errors.New("container has no securityContext")
	}
	nonRoot := (sc.RunAsNonRoot != nil && *sc.RunAsNonRoot) || (sc.RunAsNonRoot == nil && ps != nil && ps.RunAsNonRoot != nil && *ps.RunAsNonRoot)
	if !nonRoot {
		return errors.New("runAsNonRoot is not true")
	}
	uid := sc.RunAsUser
	if uid == nil && ps != nil {
		uid = ps.RunAsUser
	}
	if uid == nil || *uid == 0 {
		return errors.New("runAsUser must be set to a non-zero uid (65532, the distroless nonroot user)")
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		return errors.New("readOnlyRootFilesystem is not true")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		return errors.New("allowPrivilegeEscalation is not false")
	}
	if sc.Privileged != nil && *sc.Privileged {
		return errors.New("container is privileged")
	}
	if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
		return errors.New("capabilities must drop ALL and add none")
	}
	seccomp := sc.SeccompProfile
	if seccomp == nil && ps != nil {
		seccomp = ps.SeccompProfile
	}
	if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
		return errors.New("seccompProfile must be RuntimeDefault")
	}
	return nil
}

func checkResources(b *Bundle) error {
	c, err := b.Container()
	if err != nil {
		return err
	}
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, okr := c.Resources.Requests[r]
		lim, okl := c.Resources.Limits[r]
		if !okr || !okl {
			return fmt.Errorf("container needs both a request and a limit for %s", r)
		}
		if req.Cmp(lim) > 0 {
			return fmt.Errorf("%s request %s exceeds its limit %s", r, req.String(), lim.String())
		}
	}
	for _, e := range c.Env {
		if e.Name != "GOMEMLIMIT" || e.Value == "" {
			continue
		}
		// Go writes 900MiB, Kubernetes 900Mi.
		q, err := resource.ParseQuantity(strings.TrimSuffix(e.Value, "B"))
		if err != nil {
			return fmt.Errorf("GOMEMLIMIT %q: %v", e.Value, err)
		}
		lim := c.Resources.Limits[corev1.ResourceMemory]
		if q.Cmp(lim) >= 0 {
			return fmt.Errorf("GOMEMLIMIT %s must stay below the memory limit %s", e.Value, lim.String())
		}
	}
	return nil
}

func checkTopologySpread(b *Bundle) error {
	tsc := b.Deployment.Spec.Template.Spec.TopologySpreadConstraints
	if len(tsc) == 0 {
		return errors.New("deployment.yaml: no topologySpreadConstraints")
	}
	for _, t := range tsc {
		if err := selects(t.LabelSelector, b.podLabels()); err != nil {
			return fmt.Errorf("topologySpreadConstraint %s: %w", t.TopologyKey, err)
		}
	}
	return nil
}

func checkPrometheus(b *Bundle) error {
	a := b.Deployment.Spec.Template.Annotations
	if a["prometheus.io/scrape"] != "true" {
		return errors.New(`pod annotation prometheus.io/scrape must be "true"`)
	}
	if a["prometheus.io/path"] != "/metrics" {
		return errors.New("pod annotation prometheus.io/path must be /metrics")
	}
	admin, err := b.namedPort(AdminPortName)
	if err != nil {
		return err
	}
	if a["prometheus.io/port"] != strconv.Itoa(int(admin)) {
		return fmt.Errorf("pod annotation prometheus.io/port %q is not the admin port %d", a["prometheus.io/port"], admin)
	}
	return nil
}

func checkServiceAccount(b *Bundle) error {
	if n := b.Deployment.Spec.Template.Spec.ServiceAccountName; n != b.ServiceAccount.Name {
		return fmt.Errorf("deployment serviceAccountName %q, serviceaccount.yaml is %q", n, b.ServiceAccount.Name)
	}
	return nil
}

// checkSecretPlaceholder keeps a real credential out of the example.
func checkSecretPlaceholder(b *Bundle) error {
	if len(b.Secret.Data)+len(b.Secret.StringData) == 0 {
		return errors.New("secret.yaml: no keys")
	}
	for k, v := range b.Secret.StringData {
		if !strings.Contains(v, "REPLACE-ME") {
			return fmt.Errorf("secret.yaml %s: the example value must be a placeholder containing REPLACE-ME", k)
		}
	}
	for k, v := range b.Secret.Data {
		if !bytes.Contains(v, []byte("REPLACE-ME")) {
			return fmt.Errorf("secret.yaml %s: the example value must be a placeholder containing REPLACE-ME", k)
		}
	}
	return nil
}

// Instruction is one Dockerfile instruction, continuation lines joined.
type Instruction struct {
	Cmd  string // upper case: FROM, RUN, ...
	Args string
}

// Instructions parses the Dockerfile enough for the checks below.
func Instructions(dockerfile string) []Instruction {
	var out []Instruction
	var cur strings.Builder
	for l := range strings.Lines(dockerfile) {
		t := strings.TrimSpace(l)
		if cur.Len() == 0 && (t == "" || strings.HasPrefix(t, "#")) {
			continue
		}
		if cont, ok := strings.CutSuffix(t, `\`); ok {
			cur.WriteString(cont + " ")
			continue
		}
		cur.WriteString(t)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, Instruction{strings.ToUpper(cmd), strings.Join(strings.Fields(args), " ")})
		cur.Reset()
	}
	return out
}

// GoBuild returns the Dockerfile's go build instruction.
func GoBuild(dockerfile string) (string, error) {
	for _, in := range Instructions(dockerfile) {
		if in.Cmd == "RUN" && strings.Contains(in.Args, "go build") {
			return in.Args, nil
		}
	}
	return "", errors.New("Dockerfile: no RUN ... go build")
}

// BuildLDFlags is the exact -ldflags value the Dockerfile must use.
const BuildLDFlags = `-s -w -X main.version=${VERSION}`

func checkDockerfile(b *Bundle) error {
	ins := Instructions(b.Dockerfile)
	var froms []string
	var final []Instruction // instructions of the last stage
	for _, in := range ins {
		if in.Cmd == "FROM" {
			froms = append(froms, in.Args)
			final = nil
			continue
		}
		final = append(final, in)
	}
	if len(froms) < 2 {
		return errors.New("Dockerfile: want a multi-stage build")
	}
	if !regexp.MustCompile(`(^|\s)golang:1\.26(\.\d+)?(-bookworm)?(@\S+)?\s+AS\s+\S+`).MatchString(froms[0]) {
		return fmt.Errorf("Dockerfile: build stage %q is not golang:1.26(-bookworm)", froms[0])
	}
	base := strings.Fields(froms[len(froms)-1])[0]
	if base != "scratch" && !strings.HasPrefix(base, "gcr.io/distroless/static-debian12:nonroot") {
		return fmt.Errorf("Dockerfile: final stage %q is neither distroless static nonroot nor scratch", base)
	}
	gb, err := GoBuild(b.Dockerfile)
	if err != nil {
		return err
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", `-ldflags "` + BuildLDFlags + `"`, "./cmd/bridge"} {
		if !strings.Contains(gb, want) {
			return fmt.Errorf("Dockerfile: go build lacks %s", want)
		}
	}
	get := func(cmd string) string {
		v := ""
		for _, in := range final {
			if in.Cmd == cmd {
				v = in.Args
			}
		}
		return v
	}
	user := strings.Split(get("USER"), ":")[0]
	ps := b.Deployment.Spec.Template.Spec.SecurityContext
	if ps == nil || ps.RunAsUser == nil || user != strconv.FormatInt(*ps.RunAsUser, 10) {
		return fmt.Errorf("Dockerfile USER %q does not match the pod's runAsUser", get("USER"))
	}
	if !strings.Contains(get("COPY"), " /bridge") {
		return errors.New("Dockerfile: the binary must be copied to /bridge")
	}
	if get("ENTRYPOINT") != `["/bridge"]` {
		return fmt.Errorf(`Dockerfile: ENTRYPOINT %s, want ["/bridge"]`, get("ENTRYPOINT"))
	}
	cfgPath, err := b.ConfigPath()
	if err != nil {
		return err
	}
	if want := fmt.Sprintf(`["serve", "--config", %q]`, cfgPath); get("CMD") != want {
		return fmt.Errorf("Dockerfile: CMD %s, want %s (the Deployment's config path)", get("CMD"), want)
	}
	exposed := strings.Fields(get("EXPOSE"))
	for _, name := range []string{GRPCPortName, AdminPortName} {
		p, err := b.namedPort(name)
		if err != nil {
			return err
		}
		if !slices.Contains(exposed, strconv.Itoa(int(p))) {
			return fmt.Errorf("Dockerfile: EXPOSE %v lacks the %s port %d", exposed, name, p)
		}
	}
	return nil
}

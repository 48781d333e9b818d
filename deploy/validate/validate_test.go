package validate

import (
	"bytes"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

const (
	manifestDir = "../kubernetes"
	repoRoot    = "../.."
)

var dockerfile = filepath.Join(repoRoot, "Dockerfile")

func load(t *testing.T) *Bundle {
	t.Helper()
	b, err := Load(manifestDir, dockerfile)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestManifests is the deploy check: every invariant holds for the
// committed manifests.
func TestManifests(t *testing.T) {
	b := load(t)
	for _, c := range Checks {
		t.Run(c.Name, func(t *testing.T) {
			if err := c.Run(b); err != nil {
				t.Error(err)
			}
		})
	}
}

func ctr(t *testing.T, b *Bundle) *corev1.Container {
	t.Helper()
	c, err := b.Container()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func editConfig(old, new string) func(*testing.T, *Bundle) {
	return func(t *testing.T, b *Bundle) {
		s := b.ConfigMap.Data[ConfigKey]
		if !strings.Contains(s, old) {
			t.Fatalf("config.yaml has no %q", old)
		}
		b.ConfigMap.Data[ConfigKey] = strings.Replace(s, old, new, 1)
	}
}

func editDockerfile(old, new string) func(*testing.T, *Bundle) {
	return func(t *testing.T, b *Bundle) {
		if !strings.Contains(b.Dockerfile, old) {
			t.Fatalf("Dockerfile has no %q", old)
		}
		b.Dockerfile = strings.Replace(b.Dockerfile, old, new, 1)
	}
}

func volume(t *testing.T, b *Bundle, name string) *corev1.Volume {
	for i := range b.Deployment.Spec.Template.Spec.Volumes {
		if v := &b.Deployment.Spec.Template.Spec.Volumes[i]; v.Name == name {
			return v
		}
	}
	t.Fatalf("no volume %s", name)
	return nil
}

func mount(t *testing.T, b *Bundle, name string) *corev1.VolumeMount {
	c := ctr(t, b)
	for i := range c.VolumeMounts {
		if m := &c.VolumeMounts[i]; m.Name == name {
			return m
		}
	}
	t.Fatalf("no volume mount %s", name)
	return nil
}

func ptr[T any](v T) *T { return &v }

// breakages: for every check, edits of the real manifests that it must
// catch. TestEveryCheckCanFail proves each assertion can fail.
var breakages = []struct {
	check, what string
	edit        func(*testing.T, *Bundle)
}{
	{"NamespaceAgnostic", "a hard-coded namespace", func(t *testing.T, b *Bundle) { b.Service.Namespace = "prod" }},
	{"ConfigParses", "an unknown config key", editConfig("drain_grace:", "drain_grace_seconds:")},
	{"ConfigParses", "a bad subprotocol", editConfig("[graphql-transport-ws, graphql-ws]", "[graphql-transport-ws, graphql_ws]")},
	{"ConfigListensOnContainerPorts", "loopback gRPC address", editConfig(`grpc_address: ":50051"`, `grpc_address: "127.0.0.1:50051"`)},
	{"ConfigListensOnContainerPorts", "admin off", editConfig(`admin_address: ":9090"`, `admin_address: "off"`)},
	{"ConfigListensOnContainerPorts", "container port differs", func(t *testing.T, b *Bundle) { ctr(t, b).Ports[0].ContainerPort = 50052 }},
	{"ArgsReferenceConfigMapMount", "--config elsewhere", func(t *testing.T, b *Bundle) { ctr(t, b).Args[2] = "/etc/bridge/config.yaml" }},
	{"ArgsReferenceConfigMapMount", "wrong item path", func(t *testing.T, b *Bundle) { volume(t, b, "config").ConfigMap.Items[0].Path = "bridge.yaml" }},
	{"ArgsReferenceConfigMapMount", "wrong ConfigMap", func(t *testing.T, b *Bundle) { volume(t, b, "config").ConfigMap.Name = "other" }},
	{"ArgsReferenceConfigMapMount", "no serve", func(t *testing.T, b *Bundle) { ctr(t, b).Args[0] = "check-config" }},
	{"TokenFilesMountedFromSecret", "token mounted elsewhere", func(t *testing.T, b *Bundle) {
		mount(t, b, "orders-token").MountPath = "/var/run/secrets/gqlbridge/order"
	}},
	{"TokenFilesMountedFromSecret", "token file renamed", editConfig("gqlbridge/orders/token", "gqlbridge/orders/token.txt")},
	{"TokenFilesMountedFromSecret", "secret key renamed", func(t *testing.T, b *Bundle) {
		b.Secret.StringData = map[string]string{"orders": "REPLACE-ME"}
	}},
	{"TokenFilesMountedFromSecret", "subPath mount", func(t *testing.T, b *Bundle) { mount(t, b, "orders-token").SubPath = "token" }},
	{"TokenFilesMountedFromSecret", "other Secret", func(t *testing.T, b *Bundle) { b.Secret.Name = "tokens" }},
	{"ConfigFilesMounted", "an unmounted CA file", editConfig("    dial_timeout: 10s\n",
		"    tls:\n      ca_file: /etc/ssl/orders/ca.pem\n    dial_timeout: 10s\n")},
	{"ConfigFilesMounted", "a file the ConfigMap volume lacks", editConfig("    dial_timeout: 10s\n",
		"    tls:\n      ca_file: /etc/gqlbridge/orders-ca.pem\n    dial_timeout: 10s\n")},
	{"ConfigFilesMounted", "a file read again on a subPath mount", func(t *testing.T, b *Bundle) { mount(t, b, "orders-token").SubPath = "token" }},
	{"ConfigFilesMounted", "a token command the image lacks", editConfig("file: /var/run/secrets/gqlbridge/orders/token",
		"command: [/bin/sh, -c, cat /token]")},
	{"DeploymentSelectorMatchesPods", "selector/labels differ", func(t *testing.T, b *Bundle) {
		b.Deployment.Spec.Selector.MatchLabels["app.kubernetes.io/name"] = "bridge"
	}},
	{"ServiceHeadlessAndSelectsPods", "ClusterIP service", func(t *testing.T, b *Bundle) { b.Service.Spec.ClusterIP = "" }},
	{"ServiceHeadlessAndSelectsPods", "selector differs", func(t *testing.T, b *Bundle) {
		b.Service.Spec.Selector["app.kubernetes.io/instance"] = "other"
	}},
	{"ServiceHeadlessAndSelectsPods", "targetPort missing", func(t *testing.T, b *Bundle) {
		b.Service.Spec.Ports[0].TargetPort = intstr.FromString("grpcs")
	}},
	{"ServiceHeadlessAndSelectsPods", "no appProtocol", func(t *testing.T, b *Bundle) { b.Service.Spec.Ports[0].AppProtocol = nil }},
	{"ServiceHeadlessAndSelectsPods", "not-ready pods published", func(t *testing.T, b *Bundle) { b.Service.Spec.PublishNotReadyAddresses = true }},
	{"PDBSelectsPods", "selector differs", func(t *testing.T, b *Bundle) {
		b.PDB.Spec.Selector.MatchLabels["app.kubernetes.io/name"] = "other"
	}},
	{"PDBSelectsPods", "maxUnavailable 2", func(t *testing.T, b *Bundle) { b.PDB.Spec.MaxUnavailable = ptr(intstr.FromInt32(2)) }},
	{"HPATargetsDeployment", "other target", func(t *testing.T, b *Bundle) { b.HPA.Spec.ScaleTargetRef.Name = "bridge" }},
	{"HPATargetsDeployment", "minReplicas 1", func(t *testing.T, b *Bundle) { b.HPA.Spec.MinReplicas = ptr(int32(1)) }},
	{"HPATargetsDeployment", "no cpu request", func(t *testing.T, b *Bundle) { delete(ctr(t, b).Resources.Requests, corev1.ResourceCPU) }},
	{"Probes", "readiness on /healthz", func(t *testing.T, b *Bundle) { ctr(t, b).ReadinessProbe.HTTPGet.Path = "/healthz" }},
	{"Probes", "liveness on the gRPC port", func(t *testing.T, b *Bundle) {
		ctr(t, b).LivenessProbe.HTTPGet.Port = intstr.FromString("grpc")
	}},
	{"Probes", "liveness on a missing port", func(t *testing.T, b *Bundle) {
		ctr(t, b).LivenessProbe.HTTPGet.Port = intstr.FromInt32(8080)
	}},
	{"Probes", "gRPC health liveness", func(t *testing.T, b *Bundle) {
		ctr(t, b).LivenessProbe.ProbeHandler = corev1.ProbeHandler{GRPC: &corev1.GRPCAction{Port: 50051}}
	}},
	{"TerminationBudget", "longer drain_grace", editConfig("drain_grace: 20s", "drain_grace: 40s")},
	{"TerminationBudget", "shorter grace period", func(t *testing.T, b *Bundle) {
		b.Deployment.Spec.Template.Spec.TerminationGracePeriodSeconds = ptr(int64(30))
	}},
	{"TerminationBudget", "no preStop", func(t *testing.T, b *Bundle) { ctr(t, b).Lifecycle = nil }},
	{"TerminationBudget", "exec preStop", func(t *testing.T, b *Bundle) {
		ctr(t, b).Lifecycle.PreStop = &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"sh", "-c", "sleep 5"}}}
	}},
	{"SecurityContext", "writable root", func(t *testing.T, b *Bundle) { ctr(t, b).SecurityContext.ReadOnlyRootFilesystem = ptr(false) }},
	{"SecurityContext", "root allowed", func(t *testing.T, b *Bundle) { ctr(t, b).SecurityContext.RunAsNonRoot = ptr(false) }},
	{"SecurityContext", "uid 0", func(t *testing.T, b *Bundle) { ctr(t, b).SecurityContext.RunAsUser = ptr(int64(0)) }},
	{"SecurityContext", "capabilities kept", func(t *testing.T, b *Bundle) { ctr(t, b).SecurityContext.Capabilities.Drop = nil }},
	{"SecurityContext", "privilege escalation", func(t *testing.T, b *Bundle) {
		ctr(t, b).SecurityContext.AllowPrivilegeEscalation = ptr(true)
	}},
	{"SecurityContext", "no seccomp", func(t *testing.T, b *Bundle) {
		ctr(t, b).SecurityContext.SeccompProfile = nil
		b.Deployment.Spec.Template.Spec.SecurityContext.SeccompProfile = nil
	}},
	{"Resources", "no memory limit", func(t *testing.T, b *Bundle) { delete(ctr(t, b).Resources.Limits, corev1.ResourceMemory) }},
	{"Resources", "GOMEMLIMIT above the limit", func(t *testing.T, b *Bundle) { ctr(t, b).Env[0].Value = "2GiB" }},
	{"TopologySpread", "none", func(t *testing.T, b *Bundle) { b.Deployment.Spec.Template.Spec.TopologySpreadConstraints = nil }},
	{"TopologySpread", "selector differs", func(t *testing.T, b *Bundle) {
		b.Deployment.Spec.Template.Spec.TopologySpreadConstraints[0].LabelSelector.MatchLabels["app.kubernetes.io/name"] = "x"
	}},
	{"PrometheusAnnotations", "wrong port", func(t *testing.T, b *Bundle) {
		b.Deployment.Spec.Template.Annotations["prometheus.io/port"] = "50051"
	}},
	{"ServiceAccount", "default account", func(t *testing.T, b *Bundle) { b.Deployment.Spec.Template.Spec.ServiceAccountName = "default" }},
	{"SecretIsPlaceholder", "a real-looking token", func(t *testing.T, b *Bundle) {
		b.Secret.StringData["orders-token"] = "eyJhbGciOiJIUzI1NiJ9.e30.sig"
	}},
	{"Dockerfile", "root user", editDockerfile("USER 65532:65532", "USER root")},
	{"Dockerfile", "no -trimpath", editDockerfile("-trimpath ", "")},
	{"Dockerfile", "cgo on", editDockerfile("CGO_ENABLED=0", "CGO_ENABLED=1")},
	{"Dockerfile", "other config path", editDockerfile(`"/etc/gqlbridge/config.yaml"]`, `"/config.yaml"]`)},
	{"Dockerfile", "admin port not exposed", editDockerfile("EXPOSE 50051 9090", "EXPOSE 50051")},
	{"Dockerfile", "fat final image", editDockerfile("FROM gcr.io/distroless/static-debian12:nonroot", "FROM debian:bookworm")},
	{"Dockerfile", "old Go", editDockerfile("golang:1.26-bookworm", "golang:1.25-bookworm")},
}

func TestEveryCheckCanFail(t *testing.T) {
	covered := map[string]bool{}
	for _, br := range breakages {
		covered[br.check] = true
	}
	byName := map[string]Check{}
	for _, c := range Checks {
		byName[c.Name] = c
		if !covered[c.Name] {
			t.Errorf("check %s has no breakage proving it can fail", c.Name)
		}
	}
	for _, br := range breakages {
		t.Run(br.check+"/"+br.what, func(t *testing.T) {
			c, ok := byName[br.check]
			if !ok {
				t.Fatalf("no check %s", br.check)
			}
			b := load(t)
			br.edit(t, b)
			err := c.Run(b)
			if err == nil {
				t.Fatalf("%s passed after: %s", br.check, br.what)
			}
			t.Logf("caught: %v", err)
		})
	}
}

// TestStrictDecoding: typos in the manifests fail to load.
func TestStrictDecoding(t *testing.T) {
	for _, tc := range []struct {
		file, old, new, want string
	}{
		{"deployment.yaml", "minReadySeconds:", "minReadySecond:", "unknown field"},
		{"deployment.yaml", "readOnlyRootFilesystem:", "readOnlyRootFileSystem:", "unknown field"},
		{"service.yaml", "clusterIP:", "clusterIp:", "clusterIp"},
		{"pdb.yaml", "maxUnavailable:", "maxUnavailble:", "unknown field"},
		{"hpa.yaml", "kind: HorizontalPodAutoscaler", "kind: HorizontalPodAutoScaler", "want autoscaling/v2 HorizontalPodAutoscaler"},
		{"configmap.yaml", "kind: ConfigMap", "kind: ConfigMap\nkind: Secret", "already set"},
		{"secret.yaml", "type: Opaque", "type: Opaque\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: b}", "one object per file"},
		{"extra.yaml", "", "apiVersion: v1\nkind: ConfigMap\n", "not validated"},
	} {
		t.Run(tc.file+"/"+tc.new, func(t *testing.T) {
			dir := t.TempDir()
			entries, err := os.ReadDir(manifestDir)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range entries {
				raw, err := os.ReadFile(filepath.Join(manifestDir, e.Name()))
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, e.Name()), raw, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := Load(dir, dockerfile); err != nil {
				t.Fatalf("the copy does not load: %v", err)
			}
			p := filepath.Join(dir, tc.file)
			raw, _ := os.ReadFile(p)
			if tc.old != "" && !bytes.Contains(raw, []byte(tc.old)) {
				t.Fatalf("%s has no %q", tc.file, tc.old)
			}
			if tc.old == "" {
				raw = []byte(tc.new)
			} else {
				raw = bytes.Replace(raw, []byte(tc.old), []byte(tc.new), 1)
			}
			if err := os.WriteFile(p, raw, 0o644); err != nil {
				t.Fatal(err)
			}
			_, err = Load(dir, dockerfile)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Load = %v, want an error containing %q", err, tc.want)
			}
			t.Logf("caught: %v", err)
		})
	}
}

// TestStaticBuild runs the Dockerfile's go build (same environment and
// flags) and checks the binary is static and stripped, carries the version,
// and accepts the ConfigMap's configuration (bridge check-config).
func TestStaticBuild(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go is not on PATH")
	}
	b := load(t)
	run, err := GoBuild(b.Dockerfile)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`-ldflags "([^"]*)"`).FindStringSubmatch(run)
	if m == nil {
		t.Fatalf("no -ldflags in %q", run)
	}
	const version = "validate-1.2.3"
	ldflags := strings.ReplaceAll(m[1], "${VERSION}", version)
	bin := filepath.Join(t.TempDir(), "bridge")
	cmd := exec.Command(goBin, "build", "-trimpath", "-ldflags", ldflags, "-o", bin, "./cmd/bridge")
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
	t.Logf("CGO_ENABLED=0 GOOS=linux GOARCH=%s go build -trimpath -ldflags %q ./cmd/bridge", runtime.GOARCH, ldflags)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("the binary has a program interpreter: it is dynamically linked")
		}
	}
	if libs, err := f.ImportedLibraries(); err != nil || len(libs) > 0 {
		t.Errorf("the binary imports shared libraries %v (%v)", libs, err)
	}
	if f.Section(".symtab") != nil {
		t.Error("the binary has a symbol table: -s did not apply")
	}
	if file, err := exec.LookPath("file"); err == nil {
		out, _ := exec.Command(file, bin).CombinedOutput()
		if !strings.Contains(string(out), "statically linked") {
			t.Errorf("file: %s", out)
		}
		t.Logf("file: %s", strings.TrimSpace(strings.TrimPrefix(string(out), bin+":")))
	}

	if runtime.GOOS != "linux" {
		return
	}
	out, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "gqlbridge "+version {
		t.Errorf("bridge version = %q, %v; want %q (-X main.version)", out, err, "gqlbridge "+version)
	}
	cfgFile := filepath.Join(t.TempDir(), ConfigKey)
	if err := os.WriteFile(cfgFile, []byte(b.ConfigMap.Data[ConfigKey]), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = exec.Command(bin, "check-config", cfgFile).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "configuration ok") {
		t.Errorf("bridge check-config on the ConfigMap's config.yaml: %v\n%s", err, out)
	}
}

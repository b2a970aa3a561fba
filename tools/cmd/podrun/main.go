// Command podrun runs a container of a rendered Kubernetes manifest locally, the way the kubelet would start it, so
// the chart's tests can show that the command, arguments, environment and mounted files the chart renders are what
// the binary accepts.
//
//	helm template ... | podrun -kind Job -secret db/url=postgres://... -root /tmp/x -- ./sluice
//
// It reads the manifests from stdin, picks the first object of -kind (and -name, if given), takes its first container
// and then:
//   - builds the environment from the container's env only (nothing is inherited), resolving secretKeyRef and
//     configMapKeyRef from -secret/-configmap flags or from Secrets and ConfigMaps in the same manifests; a reference
//     it cannot resolve is an error, as it would be a pod that cannot start;
//   - writes configMap and secret volumes under -root, and rewrites env values that point into a mount path so they
//     point at the local copy (the only path translation it does);
//   - replaces itself (exec) with BINARY followed by the container's command[1:] (if any) and args, so signals reach
//     the binary directly.
//
// -env NAME=VALUE overrides one variable after all that (e.g. the listen address, so a test binds loopback);
// -args replaces the container's arguments (e.g. "config check /etc/sluice/config.yaml", paths translated too).
package main

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"sigs.k8s.io/yaml"
)

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

type keyRef struct {
	Name     string `json:"name"`
	Key      string `json:"key"`
	Optional bool   `json:"optional"`
}

type container struct {
	Name    string   `json:"name"`
	Command []string `json:"command"`
	Args    []string `json:"args"`
	Env     []struct {
		Name      string  `json:"name"`
		Value     *string `json:"value"`
		ValueFrom *struct {
			SecretKeyRef    *keyRef `json:"secretKeyRef"`
			ConfigMapKeyRef *keyRef `json:"configMapKeyRef"`
		} `json:"valueFrom"`
	} `json:"env"`
	VolumeMounts []struct {
		Name      string `json:"name"`
		MountPath string `json:"mountPath"`
		SubPath   string `json:"subPath"`
	} `json:"volumeMounts"`
}

type item struct {
	Key  string `json:"key"`
	Path string `json:"path"`
}

type volume struct {
	Name      string `json:"name"`
	ConfigMap *struct {
		Name  string `json:"name"`
		Items []item `json:"items"`
	} `json:"configMap"`
	Secret *struct {
		SecretName string `json:"secretName"`
		Items      []item `json:"items"`
	} `json:"secret"`
	EmptyDir map[string]any `json:"emptyDir"`
}

type podSpec struct {
	Containers []container `json:"containers"`
	Volumes    []volume    `json:"volumes"`
}

type object struct {
	Kind     string `json:"kind"`
	Metadata struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Data       map[string]string `json:"data"`
	StringData map[string]string `json:"stringData"`
	Spec       struct {
		podSpec
		Template struct {
			Spec podSpec `json:"spec"`
		} `json:"template"`
	} `json:"spec"`
}

func main() {
	kind := flag.String("kind", "", "kind of the object to run (Deployment, Job, StatefulSet, Pod)")
	name := flag.String("name", "", "name of the object (default: the first of -kind)")
	root := flag.String("root", "", "directory to write mounted files under (required when the container mounts any)")
	dry := flag.Bool("print", false, "print the environment and command instead of running it")
	argsOverride := flag.String("args", "", "space-separated arguments to run instead of the container's (mount paths are translated)")
	var secrets, configMaps, envOverrides multiFlag
	flag.Var(&secrets, "secret", "NAME/KEY=VALUE (or NAME/KEY=@FILE): a Secret key not in the manifests; repeatable")
	flag.Var(&configMaps, "configmap", "NAME/KEY=VALUE: a ConfigMap key not in the manifests; repeatable")
	flag.Var(&envOverrides, "env", "NAME=VALUE: override one variable after rendering; repeatable")
	flag.Parse()
	if *kind == "" || flag.NArg() < 1 {
		fmt.Fprintln(os.Stderr, "usage: podrun -kind KIND [-name NAME] [-secret N/K=V]... [-root DIR] -- BINARY < manifests.yaml")
		os.Exit(2)
	}
	if err := run(*kind, *name, *root, *dry, *argsOverride, secrets, configMaps, envOverrides, flag.Arg(0)); err != nil {
		fmt.Fprintln(os.Stderr, "podrun:", err)
		os.Exit(1)
	}
}

func run(kind, name, root string, dry bool, argsOverride string, secretFlags, cmFlags, envOverrides []string, binary string) error {
	objs, err := readManifests(os.Stdin)
	if err != nil {
		return err
	}
	secrets := map[string]string{} // "name/key" -> value
	configMaps := map[string]string{}
	var target *object
	for i := range objs {
		o := &objs[i]
		switch o.Kind {
		case "Secret":
			for k, v := range o.Data {
				b, err := base64.StdEncoding.DecodeString(v)
				if err != nil {
					return fmt.Errorf("secret %s key %s: %w", o.Metadata.Name, k, err)
				}
				secrets[o.Metadata.Name+"/"+k] = string(b)
			}
			for k, v := range o.StringData {
				secrets[o.Metadata.Name+"/"+k] = v
			}
		case "ConfigMap":
			for k, v := range o.Data {
				configMaps[o.Metadata.Name+"/"+k] = v
			}
		}
		if o.Kind == kind && (name == "" || o.Metadata.Name == name) && target == nil {
			target = o
		}
	}
	if err := addFlags(secrets, secretFlags); err != nil {
		return err
	}
	if err := addFlags(configMaps, cmFlags); err != nil {
		return err
	}
	if target == nil {
		return fmt.Errorf("no %s %q in the manifests", kind, name)
	}
	spec := target.Spec.Template.Spec
	if kind == "Pod" {
		spec = target.Spec.podSpec
	}
	if len(spec.Containers) == 0 {
		return fmt.Errorf("%s %s has no containers", kind, target.Metadata.Name)
	}
	c := spec.Containers[0]

	// Mounted files.
	type mount struct{ from, to string }
	var mounts []mount
	for _, m := range c.VolumeMounts {
		var vol *volume
		for i := range spec.Volumes {
			if spec.Volumes[i].Name == m.Name {
				vol = &spec.Volumes[i]
			}
		}
		if vol == nil {
			return fmt.Errorf("volumeMount %s has no volume", m.Name)
		}
		if root == "" {
			return errors.New("the container mounts volumes: pass -root DIR")
		}
		local := filepath.Join(root, m.MountPath)
		files := map[string]string{} // path inside the volume -> content
		switch {
		case vol.ConfigMap != nil:
			if err := volumeFiles(files, configMaps, vol.ConfigMap.Name, vol.ConfigMap.Items); err != nil {
				return fmt.Errorf("volume %s: %w", m.Name, err)
			}
		case vol.Secret != nil:
			if err := volumeFiles(files, secrets, vol.Secret.SecretName, vol.Secret.Items); err != nil {
				return fmt.Errorf("volume %s: %w", m.Name, err)
			}
		case vol.EmptyDir != nil:
		default:
			return fmt.Errorf("volume %s: only configMap, secret and emptyDir volumes are supported", m.Name)
		}
		if m.SubPath != "" {
			content, ok := files[m.SubPath]
			if !ok {
				return fmt.Errorf("volume %s has no file %s for subPath", m.Name, m.SubPath)
			}
			if err := writeFile(local, content); err != nil {
				return err
			}
		} else {
			if err := os.MkdirAll(local, 0o755); err != nil {
				return err
			}
			for p, content := range files {
				if err := writeFile(filepath.Join(local, p), content); err != nil {
					return err
				}
			}
		}
		mounts = append(mounts, mount{m.MountPath, local})
	}
	sort.Slice(mounts, func(i, j int) bool { return len(mounts[i].from) > len(mounts[j].from) })

	translate := func(v string) string {
		for _, m := range mounts {
			if v == m.from || strings.HasPrefix(v, m.from+"/") {
				return m.to + strings.TrimPrefix(v, m.from)
			}
		}
		return v
	}

	// Environment.
	env := map[string]string{}
	var order []string
	for _, e := range c.Env {
		var v string
		switch {
		case e.Value != nil:
			v = *e.Value
		case e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil:
			r := e.ValueFrom.SecretKeyRef
			val, ok := secrets[r.Name+"/"+r.Key]
			if !ok {
				if r.Optional {
					continue
				}
				return fmt.Errorf("env %s: secret %s has no key %s (pass -secret %s/%s=...)", e.Name, r.Name, r.Key, r.Name, r.Key)
			}
			v = val
		case e.ValueFrom != nil && e.ValueFrom.ConfigMapKeyRef != nil:
			r := e.ValueFrom.ConfigMapKeyRef
			val, ok := configMaps[r.Name+"/"+r.Key]
			if !ok {
				if r.Optional {
					continue
				}
				return fmt.Errorf("env %s: configmap %s has no key %s", e.Name, r.Name, r.Key)
			}
			v = val
		default:
			return fmt.Errorf("env %s: unsupported valueFrom", e.Name)
		}
		v = translate(v)
		if _, seen := env[e.Name]; !seen {
			order = append(order, e.Name)
		}
		env[e.Name] = v
	}
	for _, kv := range envOverrides {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return fmt.Errorf("-env %q: want NAME=VALUE", kv)
		}
		if _, seen := env[k]; !seen {
			order = append(order, k)
		}
		env[k] = v
	}
	environ := make([]string, 0, len(order))
	for _, k := range order {
		environ = append(environ, k+"="+env[k])
	}
	argv := []string{binary}
	if len(c.Command) > 1 {
		argv = append(argv, c.Command[1:]...)
	}
	args := c.Args
	if argsOverride != "" {
		args = nil
		for _, a := range strings.Fields(argsOverride) {
			args = append(args, translate(a))
		}
	}
	argv = append(argv, args...)

	if dry {
		for _, kv := range environ {
			fmt.Println(kv)
		}
		fmt.Println(strings.Join(argv, " "))
		return nil
	}
	path, err := filepath.Abs(binary)
	if err != nil {
		return err
	}
	return syscall.Exec(path, argv, environ)
}

// volumeFiles fills files with a ConfigMap's or Secret's keys: the listed items, or every key.
func volumeFiles(files, source map[string]string, name string, items []item) error {
	if len(items) > 0 {
		for _, it := range items {
			v, ok := source[name+"/"+it.Key]
			if !ok {
				return fmt.Errorf("%s has no key %s", name, it.Key)
			}
			files[it.Path] = v
		}
		return nil
	}
	found := false
	for k, v := range source {
		if n, key, _ := strings.Cut(k, "/"); n == name {
			files[key] = v
			found = true
		}
	}
	if !found {
		return fmt.Errorf("%s is neither in the manifests nor given with a flag", name)
	}
	return nil
}

func writeFile(path, content string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(content), 0o600)
}

func addFlags(dst map[string]string, flags []string) error {
	for _, f := range flags {
		k, v, ok := strings.Cut(f, "=")
		if !ok || !strings.Contains(k, "/") {
			return fmt.Errorf("%q: want NAME/KEY=VALUE", f)
		}
		if strings.HasPrefix(v, "@") {
			b, err := os.ReadFile(v[1:])
			if err != nil {
				return err
			}
			v = string(b)
		}
		dst[k] = v
	}
	return nil
}

func readManifests(r io.Reader) ([]object, error) {
	var objs []object
	var doc bytes.Buffer
	flush := func() error {
		if strings.TrimSpace(doc.String()) == "" {
			doc.Reset()
			return nil
		}
		var o object
		if err := yaml.Unmarshal(doc.Bytes(), &o); err != nil {
			return fmt.Errorf("parsing manifests: %w", err)
		}
		doc.Reset()
		if o.Kind != "" {
			objs = append(objs, o)
		}
		return nil
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "---") {
			if err := flush(); err != nil {
				return nil, err
			}
			continue
		}
		doc.WriteString(line)
		doc.WriteByte('\n')
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return objs, flush()
}

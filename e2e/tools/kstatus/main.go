// kstatus-check prints what kstatus (sigs.k8s.io/cli-utils, the library Flux's health checks run)
// concludes about Kubernetes objects, so the e2e tests judge kubeforge's status with the real code
// rather than a re-implementation.
//
// Usage: kubectl get inferencefleet chat -o json | kstatus-check
//
// Reads one object, or a List (`kubectl get ... -o json` of several), from stdin as JSON and prints one
// JSON line per object: {"kind", "name", "status", "message"}. Objects are decoded with
// Unstructured.UnmarshalJSON, as client-go does, so integers stay int64 and kstatus's generation check
// sees them.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type verdict struct {
	Kind    string `json:"kind"`
	Name    string `json:"name"`
	Status  string `json:"status"`
	Message string `json:"message"`
}

func main() {
	if err := run(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "kstatus-check:", err)
		os.Exit(1)
	}
}

func run(in io.Reader, out io.Writer) error {
	data, err := io.ReadAll(in)
	if err != nil {
		return err
	}
	obj := &unstructured.Unstructured{}
	if err := obj.UnmarshalJSON(data); err != nil {
		return err
	}
	objects := []unstructured.Unstructured{*obj}
	if obj.IsList() {
		list, err := obj.ToList()
		if err != nil {
			return err
		}
		objects = list.Items
	}
	enc := json.NewEncoder(out)
	for i := range objects {
		res, err := status.Compute(&objects[i])
		if err != nil {
			return fmt.Errorf("%s/%s: %w", objects[i].GetKind(), objects[i].GetName(), err)
		}
		v := verdict{objects[i].GetKind(), objects[i].GetName(), string(res.Status), res.Message}
		if err := enc.Encode(v); err != nil {
			return err
		}
	}
	return nil
}

//go:build tools

// Package tools pins the commands built from k8s.io/kubernetes in go.mod: the
// control plane (kube-apiserver, kubectl) and what a node adds to it
// (kube-controller-manager, kube-scheduler, kubelet, kube-proxy).
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)

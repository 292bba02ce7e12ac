// Command depcheck pins the project's dependencies while the packages that
// use them are being written. Remove it once every import below is used.
package main

import (
	_ "github.com/anishathalye/porcupine"
	_ "github.com/containerd/cgroups/v3/cgroup1"
	_ "github.com/containerd/cgroups/v3/cgroup2"
	_ "github.com/fsnotify/fsnotify"
	_ "github.com/hashicorp/go-hclog"
	_ "github.com/hashicorp/go-plugin"
	_ "github.com/hashicorp/raft"
	_ "github.com/hashicorp/raft-autopilot"
	_ "github.com/hashicorp/raft-boltdb/v2"
	_ "github.com/hashicorp/serf/serf"
	_ "github.com/jhump/protoreflect/grpcreflect"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/tidwall/buntdb"
	_ "golang.org/x/mod/semver"
	_ "golang.org/x/sys/unix"
	_ "golang.org/x/time/rate"
	_ "google.golang.org/grpc"
	_ "google.golang.org/grpc/reflection"
)

func main() {}

// Command counter is the example stateful plughost plugin: named counters
// kept in the plugin's store namespace, exact under concurrent callers on
// any number of nodes.
package main

import "github.com/plughost/plughost/sdk"

// version is the plugin's version, set at build time with
// -ldflags "-X main.version=1.2.0".
var version = "0.0.0-dev"

func main() { sdk.Serve(sdk.Info{Name: "counter", Version: version}, newServer(version)) }

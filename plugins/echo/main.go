// Command echo is the example stateless plughost plugin: it answers with
// what it is sent and the version that answered.
package main

import "github.com/plughost/plughost/sdk"

// version is the plugin's version, set at build time with
// -ldflags "-X main.version=1.2.0".
var version = "0.0.0-dev"

func main() { sdk.Serve(sdk.Info{Name: "echo", Version: version}, &server{version: version}) }

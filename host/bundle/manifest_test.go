package bundle

import (
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseManifestDefaults(t *testing.T) {
	m, err := ParseManifest(manifestJSON(t, nil))
	if err != nil {
		t.Fatal(err)
	}
	want := &Manifest{
		Name:        "echo",
		Version:     "1.2.0",
		APIVersions: []int{1},
		Executable:  "echo",
		SHA256:      sha(exeBody),
		Services:    []string{"echo.v1.EchoService"},
		Placement:   Placement{Mode: PlacementEveryNode, Spread: SpreadFaultDomain},
		Health: Health{
			Interval:         Dur(2 * time.Second),
			Timeout:          Dur(time.Second),
			FailureThreshold: 3,
			MinHealthyTime:   Dur(5 * time.Second),
			HealthyDeadline:  Dur(60 * time.Second),
		},
		Upgrade: Upgrade{Strategy: StrategyOverlap, DrainTimeout: Dur(30 * time.Second), Policy: UpgradeAuto, MaxParallel: 1,
			MinHealthyTime: Dur(5 * time.Second), HealthyDeadline: Dur(60 * time.Second), ProgressDeadline: Dur(10 * time.Minute),
			FailureAction: FailureRollback},
		Config: json.RawMessage("{}"),
	}
	if !reflect.DeepEqual(m, want) {
		t.Errorf("got  %+v\nwant %+v", m, want)
	}
}

func TestParseManifestFull(t *testing.T) {
	data := manifestJSON(t, func(m map[string]any) {
		m["placement"] = map[string]any{"mode": "singleton"}
		m["resources"] = map[string]any{"memory_mb": 128, "cpu": 0.5, "pids": 256}
		m["health"] = map[string]any{"interval": "10s", "timeout": "3s", "failure_threshold": 5, "min_healthy_time": "1m", "healthy_deadline": "5m"}
		m["upgrade"] = map[string]any{"strategy": "restart", "drain_timeout": "1m30s"}
		m["config"] = map[string]any{"greeting": "hi", "nested": map[string]any{"Whatever": []any{1, "x"}}}
	})
	m, err := ParseManifest(data)
	if err != nil {
		t.Fatal(err)
	}
	if m.Placement.Mode != PlacementSingleton || m.Resources != (Resources{MemoryMB: 128, CPU: 0.5, Pids: 256}) {
		t.Errorf("placement/resources: %+v %+v", m.Placement, m.Resources)
	}
	wantHealth := Health{Dur(10 * time.Second), Dur(3 * time.Second), 5, Dur(time.Minute), Dur(5 * time.Minute)}
	if m.Health != wantHealth {
		t.Errorf("health = %+v, want %+v", m.Health, wantHealth)
	}
	wantUpgrade := Upgrade{Strategy: StrategyRestart, DrainTimeout: Dur(90 * time.Second), Policy: UpgradeAuto, MaxParallel: 1,
		MinHealthyTime: Dur(time.Minute), HealthyDeadline: Dur(5 * time.Minute), ProgressDeadline: Dur(10 * time.Minute), FailureAction: FailureRollback}
	if m.Upgrade != wantUpgrade {
		t.Errorf("upgrade = %+v", m.Upgrade)
	}
	// Unknown fields inside config belong to the plugin and are kept.
	if want := `{"greeting":"hi","nested":{"Whatever":[1,"x"]}}`; string(m.Config) != want {
		t.Errorf("config = %s, want %s", m.Config, want)
	}
}

func TestParseManifestErrors(t *testing.T) {
	valid := string(manifestJSON(t, nil))
	edit := func(f func(map[string]any)) string { return string(manifestJSON(t, f)) }
	set := func(key string, v any) string { return edit(func(m map[string]any) { m[key] = v }) }
	del := func(key string) string { return edit(func(m map[string]any) { delete(m, key) }) }
	health := func(k string, v any) string { return set("health", map[string]any{k: v}) }

	tests := []struct {
		name string
		data string
		want error  // besides ErrManifestInvalid
		msg  string // the exact message
	}{
		// Decoding.
		{"empty", "", nil, "plugin.json is empty: write the manifest as a JSON object"},
		{"blank", " \n", nil, "plugin.json is empty: write the manifest as a JSON object"},
		{"not an object", `["echo"]`, nil, "plugin.json must hold one JSON object, {...}"},
		{"bad JSON", `{"name": echo}`, nil, "plugin.json: invalid JSON: invalid character 'e' looking for beginning of value (line 1, column 10)"},
		{"truncated JSON", valid[:len(valid)-1], nil, "plugin.json: the JSON ends too early: close every { and ["},
		{"bad JSON on line 3", "{\n  \"name\": \"echo\",\n  \"version\": 1.2.0\n}", nil, "plugin.json: invalid JSON: invalid character '.' after object key:value pair (line 3, column 17)"},
		{"trailing garbage", valid + "x", nil, "plugin.json: unexpected data after the JSON object: remove it"},
		{"second object", valid + "{}", nil, "plugin.json: unexpected data after the JSON object: remove it"},
		{"unknown field", set("colour", "red"), nil, `plugin.json: unknown field "colour"`},
		{"unknown nested field", health("colour", "red"), nil, `plugin.json: unknown field "health.colour"`},
		{"unknown field in placement", set("placement", map[string]any{"mode": "singleton", "zone": "a"}), nil, `plugin.json: unknown field "placement.zone"`},
		{"unknown field in resources", set("resources", map[string]any{"gpu": 1}), nil, `plugin.json: unknown field "resources.gpu"`},
		{"unknown field in upgrade", set("upgrade", map[string]any{"canary": true}), nil, `plugin.json: unknown field "upgrade.canary"`},
		{"wrong case", set("Name", "echo"), nil, `plugin.json: unknown field "Name": did you mean "name"?`},
		{"wrong nested case", health("Interval", "2s"), nil, `plugin.json: unknown field "health.Interval": did you mean "health.interval"?`},
		{"duplicate field", `{"name":"echo",` + valid[1:], nil, `plugin.json: field "name" appears twice: keep one`},
		{"wrong type", set("api_versions", "1"), nil, "plugin.json: api_versions: want a list, got string"},
		{"wrong element type", set("services", []any{1}), nil, "plugin.json: services: want a string, got number"},
		{"wrong nested type", health("failure_threshold", "3"), nil, "plugin.json: health.failure_threshold: want an integer, got string"},
		{"fractional integer", set("resources", map[string]any{"pids": 1.5}), nil, "plugin.json: resources.pids: want an integer, got number 1.5"},
		{"duration not a string", health("interval", 2), nil, `plugin.json: health.interval: want a duration string such as "2s", got 2`},
		{"duration unparsable", health("interval", "2 seconds"), nil, `plugin.json: health.interval: "2 seconds" is not a duration such as "2s" or "1m30s"`},
		{"duration without unit", set("upgrade", map[string]any{"drain_timeout": "30"}), nil, `plugin.json: upgrade.drain_timeout: "30" is not a duration such as "2s" or "1m30s"`},

		// Identity.
		{"name missing", del("name"), ErrBadName, `name is missing: add "name", e.g. "counter"`},
		{"name upper case", set("name", "Echo"), ErrBadName, `name "Echo" is invalid: use 1 to 63 lowercase letters, digits and dashes, starting with a letter`},
		{"name starts with digit", set("name", "1echo"), ErrBadName, `name "1echo" is invalid`},
		{"name with dot", set("name", "echo.v1"), ErrBadName, `name "echo.v1" is invalid`},
		{"name too long", set("name", "a"+strings.Repeat("b", 63)), ErrBadName, "is invalid"},
		{"version missing", del("version"), ErrBadVersion, `version is missing: add "version", strict semver such as "1.2.0"`},
		{"version short", set("version", "1.2"), ErrBadVersion, `version "1.2" is not strict semver (MAJOR.MINOR.PATCH, e.g. 1.2.0)`},
		{"version with v", set("version", "v1.2.0"), ErrBadVersion, `version "v1.2.0" is not strict semver (MAJOR.MINOR.PATCH, e.g. 1.2.0): drop the leading "v"`},
		{"version too long", set("version", "1.2.0-"+strings.Repeat("a", 200)), ErrBadVersion, "version is longer than 128 characters: shorten its prerelease or build part"},
		{"api_versions missing", del("api_versions"), nil, "api_versions is empty: list the plugin API versions the plugin speaks, e.g. [1]"},
		{"api_versions empty", set("api_versions", []any{}), nil, "api_versions is empty"},
		{"api_version zero", set("api_versions", []any{0}), nil, "api_versions: 0 is not a plugin API version (they start at 1)"},
		{"api_version twice", set("api_versions", []any{1, 2, 1}), nil, "api_versions: 1 is listed twice: keep one"},

		// Contents.
		{"executable missing", del("executable"), nil, `executable is missing: name the plugin's executable file in the bundle, e.g. "counter"`},
		{"executable path", set("executable", "bin/echo"), nil, `executable "bin/echo" must be a plain file name at the top of the bundle, without "/"`},
		{"executable dotdot", set("executable", ".."), nil, `executable ".." must be a plain file name`},
		{"executable dot", set("executable", "."), nil, `executable "." must be a plain file name`},
		{"executable is manifest", set("executable", "plugin.json"), nil, "executable cannot be named plugin.json: that is the manifest"},
		{"sha256 missing", del("sha256"), nil, "sha256 is missing: rebuild the bundle with 'plughost bundle build'"},
		{"sha256 upper case", set("sha256", strings.ToUpper(sha(exeBody))), nil, "is not 64 lowercase hex digits: rebuild the bundle with 'plughost bundle build'"},
		{"sha256 short", set("sha256", "ab12"), nil, `sha256 "ab12" is not 64 lowercase hex digits`},
		{"services missing", del("services"), nil, `services is empty: list the full gRPC service names the plugin serves, e.g. ["counter.v1.CounterService"]`},
		{"service without package", set("services", []any{"EchoService"}), nil, `services: "EchoService" is not a full gRPC service name such as "counter.v1.CounterService"`},
		{"service method", set("services", []any{"echo.v1.EchoService/Echo"}), nil, `services: "echo.v1.EchoService/Echo" is not a full gRPC service name`},
		{"service twice", set("services", []any{"echo.v1.A", "echo.v1.A"}), nil, `services: "echo.v1.A" is listed twice: keep one`},
		{"service reserved plughost", set("services", []any{"plughost.store.v1.StoreService"}), nil, `services: "plughost.store.v1.StoreService" is reserved: the plughost.* packages are the agent's own APIs`},
		{"service reserved health", set("services", []any{"grpc.health.v1.Health"}), nil, `services: "grpc.health.v1.Health" is reserved: go-plugin serves it on every plugin's gRPC server and the agent checks the plugin process with it; report the plugin's own health with sdk.HealthChecker`},
		{"service reserved reflection v1", set("services", []any{"grpc.reflection.v1.ServerReflection"}), nil, `services: "grpc.reflection.v1.ServerReflection" is reserved: the agent serves reflection on its API address for every plugin's services`},
		{"service reserved reflection v1alpha", set("services", []any{"grpc.reflection.v1alpha.ServerReflection"}), nil, `services: "grpc.reflection.v1alpha.ServerReflection" is reserved: the agent serves reflection`},
		{"service reserved broker", set("services", []any{"plugin.GRPCBroker"}), nil, `services: "plugin.GRPCBroker" is reserved: go-plugin serves it on every plugin's gRPC server`},
		{"service reserved controller", set("services", []any{"plugin.GRPCController"}), nil, `services: "plugin.GRPCController" is reserved: go-plugin serves it`},
		{"service reserved stdio", set("services", []any{"plugin.GRPCStdio"}), nil, `services: "plugin.GRPCStdio" is reserved: go-plugin serves it`},

		// Placement and resources.
		{"placement mode", set("placement", map[string]any{"mode": "everywhere"}), nil, `placement.mode "everywhere" is not one of "every-node", "singleton", "count"`},
		{"placement count missing", set("placement", map[string]any{"mode": "count"}), nil, `placement.count 0 must be at least 1 with mode "count"`},
		{"placement count negative", set("placement", map[string]any{"mode": "count", "count": -2}), nil, `placement.count -2 must be at least 1 with mode "count"`},
		{"placement count huge", set("placement", map[string]any{"mode": "count", "count": 1001}), nil, `placement.count 1001 must be at most 1000`},
		{"placement count without mode", set("placement", map[string]any{"count": 3}), nil, `placement.count is only for mode "count", not "every-node": remove it or set "mode": "count"`},
		{"placement count on singleton", set("placement", map[string]any{"mode": "singleton", "count": 2}), nil, `placement.count is only for mode "count", not "singleton"`},
		{"placement count not integer", set("placement", map[string]any{"mode": "count", "count": "3"}), nil, `plugin.json: placement.count: want an integer, got string`},
		{"placement standby two", set("placement", map[string]any{"mode": "singleton", "standby": 2}), nil, `placement.standby 2 must be 0 (no standby) or 1 (one warm standby)`},
		{"placement standby negative", set("placement", map[string]any{"mode": "singleton", "standby": -1}), nil, `placement.standby -1 must be 0 (no standby) or 1 (one warm standby)`},
		{"placement standby on count", set("placement", map[string]any{"mode": "count", "count": 2, "standby": 1}), nil, `placement.standby is only for mode "singleton", not "count": remove it`},
		{"placement standby on every-node", set("placement", map[string]any{"standby": 1}), nil, `placement.standby is only for mode "singleton", not "every-node": remove it`},
		{"placement spread", set("placement", map[string]any{"spread": "upgrade_domain"}), nil, `placement.spread "upgrade_domain" is not "fault_domain" (the only spread rule)`},
		{"placement constraint syntax", set("placement", map[string]any{"constraint": "role = edge"}), nil, `placement.constraint "role = edge" is not a valid go-bexpr expression (1:6 (5): no match found, expected: "!=", "==", "contains", "in", "is", "matches", "not" or [ \t\r\n]): write it like role == "edge" and disk == "ssd"`},
		{"placement constraint unfinished", set("placement", map[string]any{"constraint": `role == "edge" and`}), nil, `placement.constraint "role == \"edge\" and" is not a valid go-bexpr expression (1:19 (18): no match found`},
		{"placement constraint too long", set("placement", map[string]any{"constraint": strings.Repeat(`a == "b" or `, 100) + `a == "b"`}), nil, `placement.constraint is longer than 1024 bytes: shorten it`},
		{"placement constraint not a string", set("placement", map[string]any{"constraint": true}), nil, `plugin.json: placement.constraint: want a string, got bool`},
		{"memory negative", set("resources", map[string]any{"memory_mb": -1}), nil, "resources.memory_mb -1 must be between 0 and 16777216 (0 means the agent's default)"},
		{"memory huge", set("resources", map[string]any{"memory_mb": 1 << 40}), nil, "resources.memory_mb 1099511627776 must be between 0 and 16777216"},
		{"cpu negative", set("resources", map[string]any{"cpu": -0.5}), nil, "resources.cpu -0.5 must be between 0 and 1024 cores (0 means the agent's default)"},
		{"cpu huge", set("resources", map[string]any{"cpu": 2048}), nil, "resources.cpu 2048 must be between 0 and 1024 cores"},
		{"pids negative", set("resources", map[string]any{"pids": -1}), nil, "resources.pids -1 must be between 0 and 4194304 (0 means the agent's default)"},

		// Health and upgrade.
		{"interval negative", health("interval", "-2s"), nil, "health.interval -2s must be positive"},
		{"timeout negative", health("timeout", "-1s"), nil, "health.timeout -1s must be positive"},
		{"timeout over interval", health("timeout", "3s"), nil, "health.timeout 3s must not be longer than health.interval 2s"},
		{"failure threshold negative", health("failure_threshold", -1), nil, "health.failure_threshold -1 must be at least 1"},
		{"min healthy negative", health("min_healthy_time", "-1s"), nil, "health.min_healthy_time -1s must not be negative"},
		{"deadline negative", health("healthy_deadline", "-1s"), nil, "health.healthy_deadline -1s must be positive"},
		{"min healthy over deadline", health("min_healthy_time", "2m"), nil, "health.min_healthy_time 2m0s must be shorter than health.healthy_deadline 1m0s"},
		{"min healthy equals deadline", health("min_healthy_time", "60s"), nil, "health.min_healthy_time 1m0s must be shorter than health.healthy_deadline 1m0s"},
		{"strategy", set("upgrade", map[string]any{"strategy": "blue-green"}), nil, `upgrade.strategy "blue-green" is not one of "overlap", "restart"`},
		{"drain negative", set("upgrade", map[string]any{"drain_timeout": "-5s"}), nil, "upgrade.drain_timeout -5s must be positive"},
		{"upgrade policy", set("upgrade", map[string]any{"policy": "never"}), nil, `upgrade.policy "never" is not one of "auto", "manual"`},
		{"max parallel negative", set("upgrade", map[string]any{"max_parallel": -1}), nil, "upgrade.max_parallel -1 must be between 1 and 1024"},
		{"max parallel huge", set("upgrade", map[string]any{"max_parallel": 5000}), nil, "upgrade.max_parallel 5000 must be between 1 and 1024"},
		{"rollout min healthy negative", set("upgrade", map[string]any{"min_healthy_time": "-1s"}), nil, "upgrade.min_healthy_time -1s must not be negative"},
		{"rollout deadline negative", set("upgrade", map[string]any{"healthy_deadline": "-1s"}), nil, "upgrade.healthy_deadline -1s must be positive"},
		{"rollout min healthy over deadline", set("upgrade", map[string]any{"healthy_deadline": "3s"}), nil,
			"upgrade.min_healthy_time 5s must be shorter than upgrade.healthy_deadline 3s"},
		{"progress deadline negative", set("upgrade", map[string]any{"progress_deadline": "-1m"}), nil, "upgrade.progress_deadline -1m0s must be positive"},
		{"progress deadline short", set("upgrade", map[string]any{"progress_deadline": "30s"}), nil,
			"upgrade.progress_deadline 30s must not be shorter than upgrade.healthy_deadline 1m0s"},
		{"failure action", set("upgrade", map[string]any{"failure_action": "ignore"}), nil, `upgrade.failure_action "ignore" is not one of "rollback", "pause"`},
		{"max parallel as string", set("upgrade", map[string]any{"max_parallel": "2"}), nil, "upgrade.max_parallel: want an integer"},

		// Config.
		{"config array", set("config", []any{1}), nil, "config must be a JSON object, e.g. {}"},
		{"config string", set("config", "x"), nil, "config must be a JSON object, e.g. {}"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := ParseManifest([]byte(tt.data))
			if err == nil {
				t.Fatalf("got %+v, want error %q", m, tt.msg)
			}
			if !errors.Is(err, ErrManifestInvalid) {
				t.Errorf("error %q does not wrap ErrManifestInvalid", err)
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("error %q does not wrap %v", err, tt.want)
			}
			if got := err.Error(); got != tt.msg && !strings.Contains(got, tt.msg) {
				t.Errorf("error\n got %q\nwant %q", got, tt.msg)
			}
		})
	}
}

// TestParseManifestStandardServices: services in the grpc.* packages that
// neither the agent nor go-plugin serves are a plugin's to declare.
func TestParseManifestStandardServices(t *testing.T) {
	for _, svc := range []string{
		"grpc.testing.TestService",
		"grpc.testing.UnimplementedService",
		"grpc.health.v2.Health",
		"grpc.reflection.v2.ServerReflection",
		"plugin.Other",
	} {
		m, err := ParseManifest(manifestJSON(t, func(m map[string]any) { m["services"] = []any{svc} }))
		if err != nil {
			t.Errorf("services [%q]: %v", svc, err)
			continue
		}
		if !reflect.DeepEqual(m.Services, []string{svc}) {
			t.Errorf("services [%q]: parsed as %q", svc, m.Services)
		}
	}
}

func TestParseManifestTooLarge(t *testing.T) {
	data := manifestJSON(t, func(m map[string]any) {
		m["config"] = map[string]any{"blob": strings.Repeat("x", MaxManifestSize)}
	})
	_, err := ParseManifest(data)
	checkErr(t, err, ErrManifestInvalid, "plugin.json is larger than 1 MiB")
}

func TestParseManifestNullConfig(t *testing.T) {
	m, err := ParseManifest(manifestJSON(t, func(m map[string]any) { m["config"] = nil }))
	if err != nil {
		t.Fatal(err)
	}
	if string(m.Config) != "{}" {
		t.Errorf("config = %s, want {}", m.Config)
	}
}

func TestValidateWithoutDefaults(t *testing.T) {
	m := newManifest()
	m.Executable = "echo"
	m.SHA256 = sha(exeBody)
	checkErr(t, m.Validate(), ErrManifestInvalid, `placement.mode "" is not one of`)
	m.SetDefaults()
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
	m.Resources.CPU = math.NaN()
	checkErr(t, m.Validate(), ErrManifestInvalid, "resources.cpu NaN must be between 0 and 1024")
}

func TestValidVersion(t *testing.T) {
	tests := []struct {
		v  string
		ok bool
	}{
		{"1.2.0", true},
		{"0.0.0", true},
		{"10.20.30", true},
		{"1.2.0-rc.1", true},
		{"1.2.0-rc.1+b5", true},
		{"1.2.0+build.7", true},
		{"1.0.0-alpha-1.x-y", true},
		{"1.0.0-0.3.7", true},
		{"v1.2.0", false},
		{"1.2", false},
		{"1", false},
		{"01.2.0", false},
		{"1.02.0", false},
		{"1.2.00", false},
		{"1.2.0-", false},
		{"1.2.0+", false},
		{"1.2.0-rc..1", false},
		{"1.2.0-01", false},
		{"1.2.0-rc_1", false},
		{" 1.2.0", false},
		{"1.2.0 ", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := ValidVersion(tt.v); got != tt.ok {
			t.Errorf("ValidVersion(%q) = %v, want %v", tt.v, got, tt.ok)
		}
		if got := semverOrgRE.MatchString(tt.v); got != tt.ok {
			t.Errorf("semver.org regexp disagrees with the table on %q", tt.v)
		}
	}
}

func TestCompareVersions(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"1.2.0", "1.10.0", -1},
		{"1.2.0-rc.1", "1.2.0", -1},
		{"1.2.0-rc.2", "1.2.0-rc.10", -1},
		{"2.0.0", "1.99.99", 1},
		{"1.2.0+a", "1.2.0+b", 0},
	}
	for _, tt := range tests {
		if got := CompareVersions(tt.a, tt.b); got != tt.want {
			t.Errorf("CompareVersions(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}

func TestValidName(t *testing.T) {
	for name, ok := range map[string]bool{
		"counter": true, "a": true, "my-plugin2": true, "a" + strings.Repeat("b", 62): true,
		"": false, "Counter": false, "2fa": false, "-x": false, "a_b": false, "a.b": false, "a" + strings.Repeat("b", 63): false,
	} {
		if got := ValidName(name); got != ok {
			t.Errorf("ValidName(%q) = %v, want %v", name, got, ok)
		}
	}
}

func TestCheckAPIVersions(t *testing.T) {
	m := &Manifest{Name: "counter", Version: "1.2.0"}
	tests := []struct {
		plugin, host []int
		msg          string
	}{
		{[]int{1}, []int{1}, ""},
		{[]int{1, 2}, []int{2, 3}, ""},
		{[]int{2}, []int{1}, "bundle counter 1.2.0 speaks plugin API [2], this agent speaks [1]: rebuild the plugin with an SDK for API 1 or upgrade the agent"},
		{[]int{1}, []int{2, 3}, "bundle counter 1.2.0 speaks plugin API [1], this agent speaks [2, 3]: rebuild the plugin with an SDK for API 2 or 3"},
		{[]int{1, 4}, []int{2, 3}, "bundle counter 1.2.0 speaks plugin API [1, 4], this agent speaks [2, 3]: rebuild the plugin with an SDK for API 2 or 3 or upgrade the agent"},
		{[]int{1}, nil, "bundle counter 1.2.0 speaks plugin API [1], this agent speaks []: rebuild the plugin with an SDK for API (none) or upgrade the agent"},
	}
	for _, tt := range tests {
		m.APIVersions = tt.plugin
		err := CheckAPIVersions(m, tt.host)
		if tt.msg == "" {
			if err != nil {
				t.Errorf("%v vs %v: %v", tt.plugin, tt.host, err)
			}
			continue
		}
		if !errors.Is(err, ErrAPIVersion) || err.Error() != tt.msg {
			t.Errorf("%v vs %v:\n got %v\nwant %s", tt.plugin, tt.host, err, tt.msg)
		}
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	data := manifestJSON(t, func(m map[string]any) {
		m["resources"] = map[string]any{"memory_mb": 128, "cpu": 0.5}
		m["health"] = map[string]any{"interval": "1m30s"}
		m["config"] = map[string]any{"url": "http://a/?x=1&y=<2>"}
	})
	// json.Marshal escapes HTML; plugin.json written by hand does not, and
	// Marshal keeps config as it was written.
	data = []byte(strings.NewReplacer(`\u0026`, "&", `\u003c`, "<", `\u003e`, ">").Replace(string(data)))
	m, err := ParseManifest(data)
	if err != nil {
		t.Fatal(err)
	}
	out, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	want := `{
  "name": "echo",
  "version": "1.2.0",
  "api_versions": [
    1
  ],
  "executable": "echo",
  "sha256": "` + sha(exeBody) + `",
  "services": [
    "echo.v1.EchoService"
  ],
  "placement": {
    "mode": "every-node",
    "spread": "fault_domain"
  },
  "resources": {
    "memory_mb": 128,
    "cpu": 0.5
  },
  "health": {
    "interval": "1m30s",
    "timeout": "1s",
    "failure_threshold": 3,
    "min_healthy_time": "5s",
    "healthy_deadline": "1m0s"
  },
  "upgrade": {
    "strategy": "overlap",
    "drain_timeout": "30s",
    "policy": "auto",
    "max_parallel": 1,
    "min_healthy_time": "5s",
    "healthy_deadline": "1m0s",
    "progress_deadline": "10m0s",
    "failure_action": "rollback"
  },
  "config": {
    "url": "http://a/?x=1&y=<2>"
  }
}
`
	if string(out) != want {
		t.Errorf("Marshal:\n%s\nwant\n%s", out, want)
	}
	again, err := ParseManifest(out)
	if err != nil {
		t.Fatal(err)
	}
	m.Config, again.Config = nil, nil // whitespace differs
	if !reflect.DeepEqual(m, again) {
		t.Errorf("round trip: got %+v, want %+v", again, m)
	}
}

func TestMarshalNilConfig(t *testing.T) {
	m := newManifest()
	out, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), `"config": {}`) {
		t.Errorf("Marshal with nil config:\n%s", out)
	}
}

func TestDurationJSON(t *testing.T) {
	b, err := json.Marshal(Dur(90 * time.Second))
	if err != nil || string(b) != `"1m30s"` {
		t.Fatalf("Marshal = %s, %v", b, err)
	}
	var d Duration
	if err := json.Unmarshal(b, &d); err != nil || d.Duration != 90*time.Second {
		t.Fatalf("Unmarshal = %v, %v", d, err)
	}
	if err := json.Unmarshal([]byte(`5`), &d); err == nil {
		t.Error("Unmarshal of a number: no error")
	}
	if err := json.Unmarshal([]byte(`"5 minutes"`), &d); err == nil {
		t.Error("Unmarshal of a bad string: no error")
	}
}

package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDefaultConfigIsValid(t *testing.T) {
	c := DefaultConfig()
	c.CAFile, c.CertFile, c.KeyFile = "ca.pem", "n1.pem", "n1-key.pem"
	if err := c.Validate(); err != nil {
		t.Fatalf("embedded defaults do not validate: %v", err)
	}
	for name, addr := range map[string]string{"api": c.APIAddr, "http": c.HTTPAddr, "rpc": c.RPCAddr, "serf": c.SerfAddr} {
		if !strings.HasPrefix(addr, "127.0.0.1:") {
			t.Errorf("default %s address %q is not loopback", name, addr)
		}
	}
}

func TestValidate(t *testing.T) {
	cases := []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"bad node name", func(c *Config) { c.Node = "a b" }, `node name "a b"`},
		{"empty data dir", func(c *Config) { c.DataDir = "" }, "-data-dir"},
		{"api not host:port", func(c *Config) { c.APIAddr = "7400" }, `-api "7400"`},
		{"negative bootstrap-expect", func(c *Config) { c.BootstrapExpect = -1 }, "-bootstrap-expect -1"},
		{"zero start timeout", func(c *Config) { c.StartTimeout = Duration{} }, "start_timeout"},
		{"unknown raft log", func(c *Config) { c.RaftLog = "rocksdb" }, `-raft-log "rocksdb": use wal or boltdb`},
		{"negative max procs", func(c *Config) { c.MaxProcs = -1 }, "-max-procs -1"},
		{"zero dead server grace", func(c *Config) { c.DeadServerGrace = Duration{} }, "-dead-server-grace 0s must be positive"},
		{"negative min quorum", func(c *Config) { c.MinQuorum = -1 }, "-min-quorum -1"},
		{"negative stabilization", func(c *Config) { c.ServerStabilization = Duration{-time.Second} }, "-server-stabilization -1s must be positive"},
		{"zero value limit", func(c *Config) { c.MaxValueBytes = 0 }, "max_value_bytes"},
		{"zero crash loop", func(c *Config) { c.CrashLoopRestarts = 0 }, "crash_loop_restarts"},
		{"negative max conns", func(c *Config) { c.MaxConns = -1 }, "max_conns -1"},
		{"zero first call timeout", func(c *Config) { c.FirstCallTimeout = Duration{} }, "first_call_timeout 0s must be positive"},
		{"txn limit below a value", func(c *Config) { c.MaxTxnBytes = c.MaxValueBytes - 1 }, "max_txn_bytes 524287 must be at least max_value_bytes (524288)"},
		{"txn limit past the wire", func(c *Config) { c.MaxTxnBytes = 65 << 20 }, "at most 67108864"},
		{"negative watches", func(c *Config) { c.MaxWatchesPerClient = -1 }, "max_watches_per_client -1"},
		{"initial management not a UUID", func(c *Config) { c.ACLInitialManagement = "hunter2" }, "acl_initial_management: the initial management token must be a UUID"},
		{"initial management twice", func(c *Config) {
			c.ACLInitialManagement, c.ACLInitialManagementFile = "6f1c3a52-8f0e-4d4b-9a57-2c1e9d0b7a11", "/etc/plughost/initial"
		}, "give one, not both"},
		{"plugin watch reserve past max", func(c *Config) { c.PluginWatchReserve = c.MaxWatches }, "plugin_watch_reserve 8192 must be"},
		{"gossip key not base64", func(c *Config) { c.Encrypt = "not base64!" }, "-encrypt: a gossip key is base64 of 32 bytes"},
		{"gossip key too short", func(c *Config) { c.Encrypt = "c2hvcnQ=" }, "this one is 5 bytes"},
		{"cluster agent without TLS", func(c *Config) { c.CAFile, c.CertFile, c.KeyFile = "", "", "" }, "TLS: -ca-file, -cert-file, -key-file not given"},
		{"cluster agent without a key", func(c *Config) { c.KeyFile = "" }, "TLS: -key-file not given"},
		{"dev agent with part of TLS", func(c *Config) { c.Dev, c.CAFile = true, "" }, "TLS: -ca-file not given"},
		{"API TLS without files", func(c *Config) { c.Dev, c.CAFile, c.CertFile, c.KeyFile, c.APITLS = true, "", "", "", true }, "-api-tls needs"},
		{"client verification without API TLS", func(c *Config) { c.APIVerifyClient = true }, "-api-verify-client needs -api-tls"},
		// Node identity (area: nodes).
		{"reserved tag", func(c *Config) { c.Tags = map[string]string{"rpc": "x"} }, `tag "rpc" is reserved for plughost`},
		{"bad tag value", func(c *Config) { c.Tags = map[string]string{"disk": "a b"} }, `tag disk="a b"`},
		{"bad fault domain", func(c *Config) { c.FaultDomain = "rack 1" }, `-fault-domain "rack 1"`},
		{"bad upgrade domain", func(c *Config) { c.UpgradeDomain = "-ud" }, `-upgrade-domain "-ud"`},
		{"probe timeout past interval", func(c *Config) { c.FailureDetection.ProbeTimeout = Duration{time.Second} }, "failure_detection.probe_timeout 1s must be positive and less than probe_interval 500ms"},
		{"negative suspicion", func(c *Config) { c.FailureDetection.SuspicionMult = -1 }, "failure_detection.suspicion_mult -1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			c.CAFile, c.CertFile, c.KeyFile = "ca.pem", "n1.pem", "n1-key.pem"
			tc.edit(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate() = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestLoadFile(t *testing.T) {
	write := func(body string) string {
		p := filepath.Join(t.TempDir(), "agent.json")
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	c := DefaultConfig()
	if err := c.LoadFile(write(`{"node": "edge-1", "start_timeout": "3s", "overrides": {"echo": {"memory_mb": 64}}}`)); err != nil {
		t.Fatal(err)
	}
	if c.Node != "edge-1" || c.StartTimeout.Duration != 3*time.Second || c.Overrides["echo"].MemoryMB != 64 || c.APIAddr != DefaultAPIAddr {
		t.Fatalf("loaded %+v", c)
	}
	// Node identity (area: nodes).
	c = DefaultConfig()
	if err := c.LoadFile(write(`{"fault_domain": "fd:/dc1/r1", "upgrade_domain": "ud2", "tags": {"disk": "ssd"},
		"failure_detection": {"probe_interval": "1s", "suspicion_mult": 4}}`)); err != nil {
		t.Fatal(err)
	}
	fd := c.FailureDetection.cluster().WithDefaults()
	if c.FaultDomain != "fd:/dc1/r1" || c.UpgradeDomain != "ud2" || c.Tags["disk"] != "ssd" ||
		fd.ProbeInterval != time.Second || fd.SuspicionMult != 4 || fd.ProbeTimeout != 250*time.Millisecond {
		t.Fatalf("loaded %+v, failure detection %+v", c, fd)
	}
	for body, want := range map[string]string{
		`{"nodes": "x"}`:           `unknown field "nodes"`,
		`{"start_timeout": 3}`:     "duration must be a string",
		`{"start_timeout": "3 s"}`: "time: unknown unit",
		`{"node": "a"} {}`:         "trailing data",
	} {
		c := DefaultConfig()
		if err := c.LoadFile(write(body)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("LoadFile(%s) = %v, want %q", body, err, want)
		}
	}
}

func TestDefaultLimits(t *testing.T) {
	c := DefaultConfig()
	if c.DefaultQuota.MaxBytes != 256<<20 || c.DefaultQuota.MaxKeys != 1_000_000 {
		t.Errorf("default quota %+v, want 256 MiB and 1,000,000 keys", c.DefaultQuota)
	}
	if c.MaxConns <= 0 || c.MaxConns > 4096 || c.MaxConnsPerClient <= 0 || c.MaxTxnBytes != 4<<20 ||
		c.MaxWatches <= 0 || c.MaxWatchesPerClient <= 0 || c.FirstCallTimeout.Duration <= 0 {
		t.Errorf("a limit has no default: %+v", c)
	}
	// A config file that sets one field of the quota keeps the other's
	// default.
	p := filepath.Join(t.TempDir(), "agent.json")
	if err := os.WriteFile(p, []byte(`{"default_quota": {"max_keys": 10}, "max_conns": 0}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := c.LoadFile(p); err != nil {
		t.Fatal(err)
	}
	if c.DefaultQuota.MaxKeys != 10 || c.DefaultQuota.MaxBytes != 256<<20 || c.MaxConns != 0 {
		t.Errorf("after the file: quota %+v, max_conns %d", c.DefaultQuota, c.MaxConns)
	}
}

func TestDefaultMaxProcs(t *testing.T) {
	for available, want := range map[int]int{1: 1, 2: 1, 3: 1, 4: 2, 16: 8} {
		if got := DefaultMaxProcs(available); got != want {
			t.Errorf("DefaultMaxProcs(%d) = %d, want %d", available, got, want)
		}
	}
}

// TestGossipKeyRequired: outside -dev, an agent with neither -encrypt nor a
// keyring from an earlier start is refused, naming -encrypt and keygen.
func TestGossipKeyRequired(t *testing.T) {
	c := DefaultConfig()
	c.DataDir = t.TempDir()
	c.CAFile, c.CertFile, c.KeyFile = testTLS(t, c.Node) // area: tls
	_, err := New(c, nil)
	if err == nil || !strings.Contains(err.Error(), "-encrypt KEY") || !strings.Contains(err.Error(), "plughost keygen") {
		t.Fatalf("New without a gossip key = %v, want a refusal naming -encrypt and plughost keygen", err)
	}
	dev := c
	dev.Dev = true
	if _, err := New(dev, nil); err != nil {
		t.Fatalf("a -dev agent without a key: %v", err)
	}
	withKey := c
	withKey.Encrypt = "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s="
	if _, err := New(withKey, nil); err != nil {
		t.Fatalf("with -encrypt: %v", err)
	}
	if err := os.MkdirAll(c.serfDir(), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(c.serfDir(), "keyring"), []byte(`["pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s="]`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(c, nil); err != nil {
		t.Fatalf("with a keyring from an earlier start: %v", err)
	}
}

package sdk

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestInfoValidate(t *testing.T) {
	tests := []struct {
		info Info
		err  string
	}{
		{Info{Name: "echo", Version: "1.2.0"}, ""},
		{Info{Name: "a-1", Version: "0.0.0-dev"}, ""},
		{Info{Name: "x", Version: "2.0.0-rc.1+build.5"}, ""},
		{Info{Name: "", Version: "1.0.0"}, "name"},
		{Info{Name: "Echo", Version: "1.0.0"}, "name"},
		{Info{Name: "1echo", Version: "1.0.0"}, "name"},
		{Info{Name: strings.Repeat("a", 64), Version: "1.0.0"}, "name"},
		{Info{Name: "echo", Version: ""}, "version"},
		{Info{Name: "echo", Version: "v1.0.0"}, "version"},
		{Info{Name: "echo", Version: "1.0"}, "version"},
		{Info{Name: "echo", Version: "1.0.0.0"}, "version"},
		{Info{Name: "echo", Version: "01.0.0"}, "version"},
	}
	for _, tt := range tests {
		err := tt.info.Validate()
		switch {
		case tt.err == "" && err != nil:
			t.Errorf("%+v: unexpected error %v", tt.info, err)
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("%+v: error %v, want one about %s", tt.info, err, tt.err)
		}
	}
}

func TestDecodeConfig(t *testing.T) {
	type cfg struct {
		LeakMB int    `json:"leak_mb"`
		Mode   string `json:"mode"`
	}
	tests := []struct {
		name string
		raw  string
		want cfg
		err  string
	}{
		{"empty keeps defaults", "", cfg{Mode: "default"}, ""},
		{"null keeps defaults", " null ", cfg{Mode: "default"}, ""},
		{"fields", `{"leak_mb": 3}`, cfg{LeakMB: 3, Mode: "default"}, ""},
		{"unknown field", `{"leak_mbs": 3}`, cfg{}, "unknown field"},
		{"wrong type", `{"leak_mb": "3"}`, cfg{}, "cannot unmarshal"},
		{"trailing data", `{"leak_mb": 3} {}`, cfg{}, "after the config"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := &Env{Config: json.RawMessage(tt.raw)}
			got := cfg{Mode: "default"}
			err := env.DecodeConfig(&got)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want one containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("decoded %+v, want %+v", got, tt.want)
			}
		})
	}
}

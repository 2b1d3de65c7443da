package imagevolume

import (
	"encoding/json"
	"testing"
)

func TestContainerConfigIsWhatTheKubeletSends(t *testing.T) {
	var cfg struct {
		Mounts []struct {
			ContainerPath string  `json:"container_path"`
			HostPath      *string `json:"host_path"`
			Readonly      bool    `json:"readonly"`
			Image         struct {
				Image              string `json:"image"`
				UserSpecifiedImage string `json:"user_specified_image"`
			} `json:"image"`
			ImageSubPath string `json:"image_sub_path"`
		} `json:"mounts"`
	}
	if err := json.Unmarshal([]byte(ContainerConfig("w", "v", "dir")), &cfg); err != nil {
		t.Fatal(err)
	}
	m := cfg.Mounts[0]
	if m.ContainerPath != "/volume" || m.HostPath == nil || *m.HostPath != "" || !m.Readonly || m.Image.Image != "v" || m.Image.UserSpecifiedImage != "v" || m.ImageSubPath != "dir" {
		t.Errorf("mount %+v", m)
	}
	var sb map[string]any
	if err := json.Unmarshal([]byte(SandboxConfig("p")), &sb); err != nil {
		t.Fatal(err)
	}
}

package vm

import (
	"testing"
	"time"
)

// A restored guest is given RestoreAnswer at most; a boot --boot-timeout.
func TestAnswerTimeout(t *testing.T) {
	tests := []struct {
		name  string
		from  Source
		boot  time.Duration
		want  time.Duration
		limit string
	}{
		{"a boot waits --boot-timeout's default", ImageSource(), 0, 5 * time.Minute, "--boot-timeout"},
		{"a boot waits --boot-timeout", ImageSource(), 9 * time.Minute, 9 * time.Minute, "--boot-timeout"},
		{"a warm restore waits RestoreAnswer", WarmSource(WarmState{}), 0, RestoreAnswer, "a restored guest answers within seconds"},
		{"a post-boot restore waits RestoreAnswer", PostBootSource(WarmState{}), 9 * time.Minute, RestoreAnswer, "a restored guest answers within seconds"},
		{"a restore waits a shorter --boot-timeout", WarmSource(WarmState{}), 30 * time.Second, 30 * time.Second, "--boot-timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := &Machine{from: tt.from, opts: Options{BootTimeout: tt.boot}}
			if got := m.answerTimeout(); got != tt.want {
				t.Errorf("answerTimeout() = %s, want %s", got, tt.want)
			}
			if got := m.answerLimit(); got != tt.limit {
				t.Errorf("answerLimit() = %q, want %q", got, tt.limit)
			}
		})
	}
}

package machine

import "testing"

func TestMemTotalGiB(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
	}{
		{"MemTotal:       24684136 kB\nMemFree: 1 kB\n", 24},
		{"MemFree: 1 kB\n", 0},
		{"MemTotal: lots\n", 0},
	} {
		if got := memTotalGiB(tc.in); got != tc.want {
			t.Errorf("memTotalGiB(%q) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

func TestDescribe(t *testing.T) {
	in := Describe()
	if in.Cores < 1 || in.Go == "" {
		t.Errorf("Describe = %+v", in)
	}
}

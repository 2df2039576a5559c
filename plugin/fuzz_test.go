package main

import "testing"

// FuzzParseConfig feeds arbitrary stdin to the plugin's config parser: no
// panic, and an accepted config always has a usable socket and timeout.
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(`{"cniVersion":"1.0.0","name":"n","type":"podwall"}`))
	f.Add([]byte(`{"cniVersion":"1.1.0","name":"n","type":"podwall","socket":"/run/x.sock","failOpen":true,"timeout":"300ms"}`))
	f.Add([]byte(`{"cniVersion":"0.4.0","name":"n","type":"podwall","prevResult":{"cniVersion":"0.4.0","ips":[{"version":"4","address":"10.0.0.2/24"}]}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		conf, err := parseConfig(data)
		if err != nil {
			return
		}
		if conf.Socket == "" || conf.Socket[0] != '/' {
			t.Fatalf("accepted socket %q", conf.Socket)
		}
		if conf.Timeout <= 0 {
			t.Fatalf("accepted timeout %v", conf.Timeout)
		}
	})
}

// FuzzParsePodArgs feeds arbitrary CNI_ARGS to the parser: no panic.
func FuzzParsePodArgs(f *testing.F) {
	f.Add("IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;K8S_POD_INFRA_CONTAINER_ID=c;K8S_POD_UID=u")
	f.Add(";;=;a=b=c")
	f.Fuzz(func(t *testing.T, args string) {
		a, err := parsePodArgs(args)
		if err == nil && a.requireIdentity() == nil && a.String() == "" {
			t.Fatal("identity accepted but prints empty")
		}
	})
}

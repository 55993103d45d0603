package bus

import (
	"net"
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/zap"
)

// TestConfigFileWithoutHostBindsLoopback: a configuration file that names no
// listen host (as `exgrpo auth init` writes it) must not make the server
// listen on every interface; a host in the file or the flag still wins.
func TestConfigFileWithoutHostBindsLoopback(t *testing.T) {
	for _, tc := range []struct {
		name, file, flag, want string
	}{
		{"no host anywhere", "", "", "127.0.0.1"},
		{"host in the file", "host: 0.0.0.0\n", "", "0.0.0.0"},
		{"host flag", "", "0.0.0.0", "0.0.0.0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			conf := filepath.Join(dir, "server.conf")
			if err := os.WriteFile(conf, []byte(tc.file+"jetstream { store_dir: \""+filepath.Join(dir, "js")+"\" }\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := StartServer(ServerConfig{ConfigFile: conf, Host: tc.flag, Port: -1}, zap.NewNop())
			if err != nil {
				t.Fatal(err)
			}
			defer s.Shutdown()
			got := s.NATS().Addr().String()
			host, _, err := net.SplitHostPort(got)
			if err != nil {
				t.Fatal(err)
			}
			ip, want := net.ParseIP(host), net.ParseIP(tc.want)
			if ip == nil || ip.IsLoopback() != want.IsLoopback() || ip.IsUnspecified() != want.IsUnspecified() {
				t.Errorf("listening on %s, want host %s", got, tc.want)
			}
		})
	}
}

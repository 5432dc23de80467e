//go:build linux

package main

import (
	"context"
	"encoding/xml"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/bootorbit/bootorbit/hil/images"
	"github.com/bootorbit/bootorbit/hil/realboard/realboardtest"
	"github.com/bootorbit/bootorbit/internal/cli/clitest"
	"github.com/bootorbit/bootorbit/internal/testrand"
)

// TestRunRealBoard runs scenarios through `hil run --board`, the code
// path of a real bench, on the bench double (hil/realboard/realboardtest:
// an SSH server in the test running commands on this machine, a board
// directory where the deployed flightd runs as a real process through the
// bootloader model at each boot, power and factory reset as local
// commands): the nominal update and a power cut during the receive run
// end to end (deploy, factory reset, status and fw_printenv over SSH,
// power through the commands), and a scenario a real board cannot give
// (a power cut timed inside a slot write) is reported skipped with the
// reason. No hardware board is attached here. With -long, every shipped
// scenario (the watchdog and health rollbacks too: the double acts on the
// images' behaviour file).
func TestRunRealBoard(t *testing.T) {
	if testing.Short() {
		t.Skip("builds flightd and runs scenarios on the bench double")
	}
	seed := testrand.New(t).Uint64()%1000 + 1
	dir := t.TempDir()
	// The run generates its images from the seed; the double's factory
	// state holds the same base image, as a real board's factory state
	// holds the run's base image. "obc-hil" is hil/scenario's hardware id.
	const size = 1 << 20
	set, err := images.Generate(context.Background(), images.Options{Dir: filepath.Join(dir, "factory-images"), Seed: seed, Hardware: "obc-hil", Size: size})
	if err != nil {
		t.Fatal(err)
	}
	flog, err := os.Create(filepath.Join(dir, "flightd.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer flog.Close()
	double := realboardtest.New(t, dir, set.Base, flog)
	bench := filepath.Join(dir, "bench.json")
	if err := double.WriteConfig(bench); err != nil {
		t.Fatal(err)
	}
	args := []string{"run", "--board", bench, "--seed", strconv.FormatUint(seed, 10), "--image-size", "1MiB", "--junit", filepath.Join(dir, "junit.xml"), "--keep", filepath.Join(dir, "run")}
	want := map[string]string{"nominal-leo-fast": "PASS", "powercut-receive": "PASS", "powercut-install": "SKIP"}
	if testrand.Long() {
		// The double acts on the images' behaviour file (image_behaviour):
		// the hang and unhealthy images' scenarios run.
		args = append(args, "--all")
		want["watchdog-rollback"], want["health-rollback"], want["nominal-uhf"] = "PASS", "PASS", "PASS"
	} else {
		args = append(args, "nominal-leo-fast", "powercut-receive", "powercut-install")
	}
	code, out, errOut := clitest.Run(commands, args...)
	t.Logf("hil %s:\n%s", strings.Join(args, " "), out)
	t.Logf("the double:\n%s", strings.Join(double.Log(), "\n"))
	if code != 0 {
		t.Fatalf("exit %d\n%s\nstderr:\n%s\ndouble:\n%s", code, out, tail(errOut, 4000), strings.Join(double.Log(), "\n"))
	}
	if !strings.Contains(out, "on the real ssh root@127.0.0.1:") || !strings.Contains(out, "board, flightd") {
		t.Errorf("the report does not name the real board:\n%s", out)
	}
	for name, res := range want {
		found := false
		for _, l := range strings.Split(out, "\n") {
			if f := strings.Fields(l); len(f) > 1 && f[0] == name {
				found = true
				if f[1] != res {
					t.Errorf("%s: %s, want %s", name, f[1], res)
				}
				break // the result table comes first; the uplinks' lines follow
			}
		}
		if !found {
			t.Errorf("%s not in the report", name)
		}
	}
	if !strings.Contains(out, "--- powercut-install skipped on a real board: a power cut while the slot is being written:") {
		t.Errorf("no reason for the skip:\n%s", out)
	}
	// The double saw the power cut and the boots through the bootloader
	// model: a boot of slot B (the trial after the update).
	log := strings.Join(double.Log(), "\n")
	if !strings.Contains(log, "power off") || !strings.Contains(log, "slot B") || !strings.Contains(log, "reboot") {
		t.Errorf("the double's log lacks a power cut, a reboot or a boot of B:\n%s", log)
	}
	data, err := os.ReadFile(filepath.Join(dir, "junit.xml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Suites []struct {
			Cases []struct {
				Name    string    `xml:"name,attr"`
				Skipped *struct{} `xml:"skipped"`
			} `xml:"testcase"`
		} `xml:"testsuite"`
	}
	if err := xml.Unmarshal(data, &doc); err != nil || len(doc.Suites) != 1 {
		t.Fatalf("junit: %v\n%s", err, data)
	}
	for _, c := range doc.Suites[0].Cases {
		if (c.Skipped != nil) != (want[c.Name] == "SKIP") {
			t.Errorf("junit: %s skipped=%v", c.Name, c.Skipped != nil)
		}
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// A bench configuration with an unknown key (a misspelt one) is refused,
// not run with a default in its place.
func TestBoardConfigStrict(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bench.json")
	os.WriteFile(path, []byte(`{"host": "obc1:22", "power_on": ["true"], "power_of": ["true"]}`), 0o600)
	for _, args := range [][]string{{"realboard", "power", "on", "--config", path}, {"run", "--board", path, "nominal-uhf"}} {
		code, _, errOut := clitest.Run(commands, args...)
		if code == 0 || !strings.Contains(errOut, `unknown field "power_of"`) {
			t.Errorf("hil %s: exit %d, %s", strings.Join(args, " "), code, errOut)
		}
	}
}

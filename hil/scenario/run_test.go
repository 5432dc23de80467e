package scenario_test

import (
	"context"
	"io/fs"
	"os"
	"testing"

	"github.com/bootorbit/bootorbit/hil/scenario"
	"github.com/bootorbit/bootorbit/hil/scenarios"
	"github.com/bootorbit/bootorbit/internal/testrand"
)

func TestScenarioDebug(t *testing.T) {
	name := os.Getenv("HIL_SCENARIO")
	if name == "" {
		t.Skip()
	}
	rng := testrand.New(t)
	env, err := scenario.Prepare(context.Background(), t.TempDir(), os.Getenv("HIL_ARCH"), rng.Uint64(), 0)
	if err != nil {
		t.Fatal(err)
	}
	env.Progress = func(s, line string) { t.Log(line) }
	if os.Getenv("HIL_VERBOSE") != "" {
		env.FlightdLog = os.Stderr
	}
	b, _ := fs.ReadFile(scenarios.FS, name+".json")
	f, _ := os.CreateTemp(t.TempDir(), "*.json")
	f.Write(b)
	f.Close()
	sc, err := scenario.Load(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	res, err := scenario.Run(context.Background(), env, sc)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", res)
	if !res.Passed {
		t.Fatal(res.Failures)
	}
}

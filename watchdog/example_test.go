package watchdog_test

import (
	"fmt"

	"github.com/bootorbit/bootorbit/watchdog"
)

// A trial of slot B that hangs: the bootloader gives it N boots, then falls
// back to A, where flightd sees the failed trial and marks B bad.
func ExampleBootControl() {
	env := &watchdog.MemEnv{}
	bc := &watchdog.BootControl{Env: env, Attempts: 2}
	bootloader := watchdog.BootloaderModel{Attempts: 2}

	if err := bc.Arm("B"); err != nil { // on A, after writing B
		panic(err)
	}
	for i := 0; i < 3; i++ { // B hangs twice, the watchdog resets the board each time
		d, _ := bootloader.Boot(env)
		fmt.Println("boot:", d.Cmdline())
	}
	st, _ := bc.Status("A")
	fmt.Println("failed trial:", st.FailedTrial)
	_ = bc.MarkBad(st.FailedTrial)
	st, _ = bc.Status("A")
	fmt.Println("order:", st.Order, "left:", st.Left["A"], st.Left["B"])
	// Output:
	// boot: rauc.slot=B
	// boot: rauc.slot=B
	// boot: rauc.slot=A
	// failed trial: B
	// order: [A] left: 1 0
}

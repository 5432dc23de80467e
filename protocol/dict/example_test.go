package dict_test

import (
	"fmt"

	"github.com/bootorbit/bootorbit/protocol"
	"github.com/bootorbit/bootorbit/protocol/dict"
)

// groundd builds an activate command; flightd looks it up by opcode and
// reads its arguments.
func ExampleCommand() {
	pc, err := dict.CmdActivate.NewCommand(42, 1001, dict.Values{"slot": "b", "attempts": 3})
	if err != nil {
		panic(err)
	}
	// ... protocol.SignCommand, the link, protocol.VerifyCommand ...
	c, _ := dict.CommandByOpcode(pc.Opcode)
	args, err := c.DecodeArgs(pc)
	fmt.Println(c.Name, dict.EnumSlot.NameOf(args["slot"].(uint64)), args["attempts"], err)
	// Output: activate b 3 <nil>
}

// flightd builds an hk.storage packet; groundd decodes it.
func ExamplePacket() {
	tm, err := dict.HKStorage.NewTelemetry(42, 1790000000000, 1, dict.Values{
		"staging_used": 1 << 20, "staging_quota": 64 << 20, "free": uint64(900 << 20)})
	if err != nil {
		panic(err)
	}
	// ... protocol.ReturnAuth.Sign, the link, protocol.ReturnVerifier.Verify ...
	p, _ := dict.PacketByID(tm.Packet)
	vals, err := p.Decode(tm.Params)
	fmt.Println(p.Name, vals["staging_used"], vals["free"], err)
	fmt.Println(dict.CodeOf(protocol.ErrReplayed) == protocol.CodeOf(protocol.ReasonReplayed))
	// Output:
	// hk.storage 1048576 943718400 <nil>
	// true
}

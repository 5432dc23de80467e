package dict

import (
	"bytes"
	"testing"

	"github.com/bootorbit/bootorbit/protocol"
)

// FuzzDecodeArgs feeds arbitrary arguments to every command's decoder: it
// must fail cleanly, and what it accepts must re-encode to the same bytes.
func FuzzDecodeArgs(f *testing.F) {
	for _, c := range Commands() {
		pc, err := c.NewCommand(1, 1, largestValues(c.Args))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(c.Opcode, []byte(pc.Args))
	}
	f.Add(CmdActivate.Opcode, []byte{0x82, 0x02, 0x03})
	f.Add(CmdVerify.Opcode, []byte{0x81, 0x61, 0x61})
	f.Fuzz(func(t *testing.T, op uint16, args []byte) {
		c, ok := CommandByOpcode(op)
		if !ok {
			return
		}
		pc := &protocol.Command{Seq: 1, Opcode: op, Args: args}
		if pc.Validate() != nil {
			return // the codec would have refused the frame
		}
		vals, err := c.DecodeArgs(pc)
		if err != nil {
			return
		}
		again, err := c.NewCommand(1, 1, vals)
		if err != nil {
			t.Fatalf("decoded args %v do not re-encode: %v", vals, err)
		}
		if !bytes.Equal(again.Args, args) {
			t.Fatalf("args %x decode to %v, which encodes as %x", args, vals, []byte(again.Args))
		}
	})
}

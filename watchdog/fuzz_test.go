package watchdog

import (
	"bytes"
	"errors"
	"testing"
)

func FuzzUBootEnvDecode(f *testing.F) {
	single, _ := EncodeUBootEnv(Vars{"a": "1", "bootargs": "x=y z"}, 64, false, 0, 0xff)
	red, _ := EncodeUBootEnv(Vars{"BOOT_ORDER": "A B"}, 64, true, 9, 0)
	f.Add(single, false)
	f.Add(red, true)
	f.Add(make([]byte, 16), false)
	f.Add([]byte("\x00\x00\x00\x00noeq\x00=x\x00a=1\x00\x00"), false)
	f.Fuzz(func(t *testing.T, data []byte, redundant bool) {
		if len(data) > 1<<16 {
			return
		}
		v, flags, err := DecodeUBootEnv(data, redundant)
		if err != nil {
			if v != nil {
				t.Fatal("error with variables")
			}
			return
		}
		// Round trip: what we read, we write back in the same size and read
		// identically (unless a name cannot be stored, or the input's list
		// ended at the very end of the area without its empty entry).
		out, err := EncodeUBootEnv(v, len(data), redundant, flags, 0)
		if errors.Is(err, ErrBadVar) || errors.Is(err, ErrEnvFull) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		v2, f2, err := DecodeUBootEnv(out, redundant)
		if err != nil || f2 != flags || !v2.Equal(v) {
			t.Fatalf("round trip: %v %d %v", v2, f2, err)
		}
	})
}

func FuzzUBootEnvEncode(f *testing.F) {
	f.Add("bootargs", "console=ttyS0 a=b", "x", "")
	f.Add("BOOT_ORDER", "A B", "BOOT_A_LEFT", "3")
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 string) {
		v := Vars{k1: v1, k2: v2}
		buf, err := EncodeUBootEnv(v, 256, true, 3, 0xff)
		if err != nil {
			if !errors.Is(err, ErrBadVar) && !errors.Is(err, ErrEnvFull) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		got, flags, err := DecodeUBootEnv(buf, true)
		if err != nil || flags != 3 || !got.Equal(v) {
			t.Fatalf("round trip of %q: %q %v", v, got, err)
		}
	})
}

func FuzzGRUBEnv(f *testing.F) {
	b, _ := NewGRUBBlock(GRUBEnvSize)
	_ = b.Replace(Vars{"BOOT_ORDER": "A B", "esc": "a\\b\nc"})
	raw, _ := b.Bytes()
	f.Add(raw)
	f.Add([]byte(grubHeader + "# comment\nx=1\n####"))
	f.Add([]byte(grubHeader + "a=\\\n\n#"))
	f.Add([]byte("# GRUB Environment Block\nbroken"))
	f.Fuzz(func(t *testing.T, data []byte) {
		blk, err := ParseGRUBEnv(data)
		if err != nil {
			if !errors.Is(err, ErrEnvFormat) {
				t.Fatalf("error without ErrEnvFormat: %v", err)
			}
			return
		}
		v := blk.Vars()
		out, err := blk.Bytes()
		if err != nil {
			t.Fatalf("re-render of a parsed block: %v", err)
		}
		if len(out) != len(data) {
			t.Fatalf("size changed %d -> %d", len(data), len(out))
		}
		blk2, err := ParseGRUBEnv(out)
		if err != nil || !blk2.Vars().Equal(v) {
			t.Fatalf("round trip: %v %v", blk2, err)
		}
		// Writing the same variables back through Replace is stable.
		if err := blk2.Replace(v); err != nil {
			if errors.Is(err, ErrBadVar) {
				return
			}
			t.Fatal(err)
		}
		out2, err := blk2.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		if v := blk.Vars(); len(v) == countVarLines(blk) && !bytes.Equal(out, out2) {
			t.Fatalf("Replace with unchanged variables changed the block")
		}
	})
}

// countVarLines counts variable lines (duplicates collapse on Replace).
func countVarLines(b *GRUBBlock) int {
	n := 0
	for _, l := range b.lines {
		if l.raw == "" {
			n++
		}
	}
	return n
}

func FuzzParseFWEnvConfig(f *testing.F) {
	f.Add("/dev/mmcblk0 0x3e0000 0x20000\n/dev/mmcblk0 0x3c0000 0x20000\n")
	f.Add("# c\nenv 0 100 1000 2\n")
	f.Fuzz(func(t *testing.T, s string) {
		locs, err := ParseFWEnvConfig(s)
		if err != nil {
			if !errors.Is(err, ErrEnvConfig) {
				t.Fatalf("error without ErrEnvConfig: %v", err)
			}
			return
		}
		if checkLocations(locs) != nil {
			t.Fatalf("accepted bad locations %+v", locs)
		}
	})
}

func FuzzParseCmdline(f *testing.F) {
	f.Add("console=ttyS0 rauc.slot=A")
	f.Fuzz(func(t *testing.T, s string) {
		slot, err := ParseCmdline(s)
		if err == nil && slot != "" && CheckSlot(slot) != nil {
			t.Fatalf("returned bad slot %q", slot)
		}
	})
}

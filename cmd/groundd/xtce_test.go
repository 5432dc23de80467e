package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bootorbit/bootorbit/groundd/xtce"
)

func TestXTCECommand(t *testing.T) {
	var want bytes.Buffer
	if err := xtce.Write(&want); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := commands.Execute(context.Background(), []string{"xtce"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if !bytes.Equal(stdout.Bytes(), want.Bytes()) || !strings.HasPrefix(stdout.String(), "<?xml") || stderr.Len() != 0 {
		t.Errorf("stdout is not the export (%d bytes, stderr %q)", stdout.Len(), stderr.String())
	}
	out := filepath.Join(t.TempDir(), "mdb.xml")
	stdout.Reset()
	if code := commands.Execute(context.Background(), []string{"xtce", "--out", out}, &stdout, &stderr); code != 0 {
		t.Fatalf("--out: exit %d: %s", code, stderr.String())
	}
	if b, err := os.ReadFile(out); err != nil || !bytes.Equal(b, want.Bytes()) || stdout.Len() != 0 {
		t.Errorf("--out: %v, %d bytes, stdout %d bytes", err, len(b), stdout.Len())
	}
	if code := commands.Execute(context.Background(), []string{"xtce", "extra"}, &stdout, &stderr); code != 2 {
		t.Errorf("an argument: exit %d, want 2", code)
	}
}

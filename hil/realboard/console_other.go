//go:build !linux

package realboard

import (
	"context"
	"fmt"
)

// ReadConsole needs Linux's termios; elsewhere it fails.
func ReadConsole(ctx context.Context, path string, baud int) (<-chan string, error) {
	return nil, fmt.Errorf("%w: reading a serial console is implemented on Linux only", ErrBoard)
}

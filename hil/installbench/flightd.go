package installbench

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/bootorbit/bootorbit/flightd"
)

// RunFlightd is the daemon RunRSS measures when no flightd binary is
// given: exactly what `flightd run --config FILE` does (LoadRunConfig,
// ApplyMemoryLimit, Run until SIGTERM), in the bench's own binary.
func RunFlightd(ctx context.Context, config string, logw io.Writer) error {
	cfg, err := flightd.LoadRunConfig(config)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(logw, &slog.HandlerOptions{Level: slog.LevelInfo}))
	log.Info("memory limit", "bytes", cfg.ApplyMemoryLimit())
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	err = flightd.Run(ctx, cfg, flightd.Options{Log: log})
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		return nil
	}
	return err
}

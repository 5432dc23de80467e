package slots

// Small-file workers: regular files up to smallFile bytes created and
// filled on goroutines of their own while the archive is read on.

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// smallFile is the largest file handed to a worker (its content is
// buffered); larger files are streamed by the extracting goroutine.
const smallFile = 1 << 20

// fileJob is one small regular file for a worker to create and fill.
type fileJob struct {
	pfd          int
	release      func() // of pfd
	base, name   string
	data         []byte
	e            Entry
	createMode   uint32
	chown, chmod bool
}

func (x *extractor) startWorkers(n int) {
	x.jobs, x.free, x.pending = make(chan fileJob, 2*n), make(chan []byte, 4*n), map[string]bool{}
	for i := 0; i < cap(x.free); i++ {
		x.free <- make([]byte, smallFile)
	}
	for i := 0; i < n; i++ {
		x.workers.Add(1)
		go func() {
			defer x.workers.Done()
			for j := range x.jobs {
				if !x.failed.Load() {
					if err := x.writeJob(&j); err != nil && !x.failed.Swap(true) {
						x.errMu.Lock()
						x.firstErr = fmt.Errorf("entry %q: %w", truncName(j.name), err)
						x.errMu.Unlock()
					}
				}
				x.flush.wrote(int64(len(j.data)))
				j.release()
				x.free <- j.data[:cap(j.data)]
				x.busy.Done()
			}
		}()
	}
}

func (x *extractor) stopWorkers() {
	close(x.jobs)
	x.workers.Wait()
}

// drain waits until every file handed to the workers is written.
func (x *extractor) drain() {
	if x.jobs == nil || len(x.pending) == 0 {
		return
	}
	x.busy.Wait()
	clear(x.pending)
}

// workerErr is the first error of a worker, naming its entry.
func (x *extractor) workerErr() error {
	if x.jobs == nil || !x.failed.Load() {
		return nil
	}
	x.errMu.Lock()
	defer x.errMu.Unlock()
	return x.firstErr
}

// writeJob creates and fills a small file on a worker.
func (x *extractor) writeJob(j *fileJob) error {
	fd, err := unix.Openat(j.pfd, j.base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, j.createMode)
	if err != nil {
		return err
	}
	// A raw descriptor: os.NewFile would cost an fcntl per file.
	err = writeAll(fd, j.data)
	if err == nil {
		err = setMetaFd(fd, &j.e, j.chown, j.chmod)
	}
	if err == nil && x.o.Sync == SyncEach {
		err = unix.Fsync(fd)
	}
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	return err
}

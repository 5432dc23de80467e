module github.com/bootorbit/bootorbit

go 1.26.0

require (
	github.com/klauspost/compress v1.20.3
	github.com/opencontainers/go-digest v1.0.0
)

module github.com/bootorbit/bootorbit

go 1.26.0

require (
	github.com/fxamacker/cbor/v2 v2.9.6
	github.com/klauspost/compress v1.20.3
	github.com/opencontainers/go-digest v1.0.0
	golang.org/x/sys v0.49.0
)

require github.com/x448/float16 v0.8.4 // indirect

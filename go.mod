module github.com/bootorbit/bootorbit

go 1.26.0

require (
	github.com/klauspost/compress v1.20.3
	github.com/opencontainers/go-digest v1.0.0
)

require (
	github.com/fxamacker/cbor/v2 v2.9.6 // indirect
	github.com/x448/float16 v0.8.4 // indirect
)

module github.com/bootorbit/bootorbit

go 1.26.0

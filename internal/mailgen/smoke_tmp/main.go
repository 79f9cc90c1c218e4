package main

import (
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/postfix-archive/mailarchive/internal/archivetest"
	"github.com/postfix-archive/mailarchive/internal/mailgen"
)

func main() {
	root := os.Args[1]
	n, _ := strconv.Atoi(os.Args[2])
	os.MkdirAll(root+"/tmp", 0o750)
	g := mailgen.New(1, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), time.Minute)
	for i := 0; i < n; i++ {
		m := g.Next()
		if _, err := archivetest.PutItem(root, m.Stamp, m.Env, m.Bytes); err != nil {
			panic(err)
		}
	}
	fmt.Println(g.Words[:5])
}

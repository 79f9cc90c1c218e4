package archivetest

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/postfix-archive/mailarchive/archive"
)

// PutItem writes a complete item with the given stamp into the root, as
// a writer would leave it (the .eml, then the .json), without the store's
// fsyncs: for tests and benchmarks that need many items at chosen times.
// env's version, id and message size and digest and header fields are
// filled in; its other fields are written as given. It returns the ID.
func PutItem(root string, stamp time.Time, env archive.Envelope, msg []byte) (string, error) {
	id, err := archive.NewID(stamp, env.Tags...)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(msg)
	fields := archive.ParseMessageFields(msg)
	env.Version, env.ID = archive.Version, id
	env.Message = fields
	env.Message.Size, env.Message.SHA256 = int64(len(msg)), hex.EncodeToString(sum[:])
	if env.ArchivedAt.IsZero() {
		env.ArchivedAt = stamp
	}
	b, err := json.MarshalIndent(env, "", "  ")
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(root, id+".eml"), msg, 0o640); err != nil {
		return "", fmt.Errorf("archivetest: %w", err)
	}
	if err := os.WriteFile(filepath.Join(root, id+".json"), append(b, '\n'), 0o640); err != nil {
		return "", fmt.Errorf("archivetest: %w", err)
	}
	return id, nil
}

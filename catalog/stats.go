package catalog

import (
	"context"
	"fmt"
	"time"

	"github.com/postfix-archive/mailarchive/archive"
)

// Stats describe the archive as the catalog knows it, and how far the
// catalog is behind the files.
type Stats struct {
	Items      int        `json:"items"`       // indexed items
	Bytes      int64      `json:"bytes"`       // their message bytes
	Unparsed   int        `json:"unparsed"`    // indexed by envelope and raw header only
	InArchive  int        `json:"in_archive"`  // complete items in the files now
	NotIndexed int        `json:"not_indexed"` // in the files, not in the catalog
	Gone       int        `json:"gone"`        // in the catalog, no longer in the files
	Damaged    int        `json:"damaged"`     // damage the walk of the files found
	LastUpdate *time.Time `json:"last_update"` // when index last finished; null if never
	Days       []DayStats `json:"days"`        // oldest first
}

// DayStats count one UTC day's items by hook point.
type DayStats struct {
	Day      string         `json:"day"` // YYYY-MM-DD, from the IDs' stamps
	Items    int            `json:"items"`
	Bytes    int64          `json:"bytes"`
	BySource map[string]int `json:"by_source"` // "" for recovered items of unknown source
}

// Stats counts what the catalog holds and compares it with a listing of
// the archive r reads (names only: no file is opened).
func (c *Catalog) Stats(ctx context.Context, r *archive.Reader) (*Stats, error) {
	st := &Stats{}
	if t := c.LastUpdate(); !t.IsZero() {
		st.LastUpdate = &t
	}
	rows, err := c.db.QueryContext(ctx, `SELECT strftime('%Y-%m-%d', stamp, 'unixepoch') AS day, source,
		count(*), sum(size), sum(problem != '') FROM items GROUP BY day, source ORDER BY day, source`)
	if err != nil {
		return nil, fmt.Errorf("catalog: stats: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var day, source string
		var n, unparsed int
		var bytes int64
		if err := rows.Scan(&day, &source, &n, &bytes, &unparsed); err != nil {
			return nil, fmt.Errorf("catalog: stats: %w", err)
		}
		if len(st.Days) == 0 || st.Days[len(st.Days)-1].Day != day {
			st.Days = append(st.Days, DayStats{Day: day, BySource: map[string]int{}})
		}
		d := &st.Days[len(st.Days)-1]
		d.Items += n
		d.Bytes += bytes
		d.BySource[source] += n
		st.Items += n
		st.Bytes += bytes
		st.Unparsed += unparsed
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("catalog: stats: %w", err)
	}
	indexed := map[string]bool{}
	idRows, err := c.db.QueryContext(ctx, `SELECT id FROM items`)
	if err != nil {
		return nil, fmt.Errorf("catalog: stats: %w", err)
	}
	defer idRows.Close()
	for idRows.Next() {
		var id string
		if err := idRows.Scan(&id); err != nil {
			return nil, fmt.Errorf("catalog: stats: %w", err)
		}
		indexed[id] = false
	}
	err = r.Walk(func(it archive.Item) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		st.InArchive++
		if _, ok := indexed[it.ID]; ok {
			indexed[it.ID] = true
		} else {
			st.NotIndexed++
		}
		return nil
	}, func(archive.Problem) { st.Damaged++ })
	if err != nil {
		return nil, err
	}
	for _, seen := range indexed {
		if !seen {
			st.Gone++
		}
	}
	return st, nil
}

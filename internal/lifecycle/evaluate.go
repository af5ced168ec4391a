package lifecycle

import (
	"cmp"
	"slices"
	"strings"
	"time"

	"github.com/berth/berth/internal/oci"
)

// Image is one manifest of a repository as a policy sees it.
type Image struct {
	Digest oci.Digest
	Tags   []string
	Pushed time.Time
	// Pulled is the last pull; zero means never pulled, and sinceImagePulled then counts from Pushed.
	Pulled time.Time
	// Parents are the indexes of the same repository that reference this manifest. While one of
	// them is kept, this manifest is kept too, whatever the rules say: expiring it would break the
	// index. A parent that is not among the evaluated images counts as kept.
	Parents []oci.Digest
}

// Decision is one image to expire and the rule that expires it.
type Decision struct {
	Digest       oci.Digest
	RulePriority int
}

// Evaluate decides which images the policy expires at the time now, following ECR's evaluation
// rules:
//   - every rule identifies the images its selection matches among all the images, whatever the
//     other rules decide, and marks those its count expires: beyond the countNumber newest (by push
//     time) for imageCountMoreThan, older than countNumber days for the since types;
//   - rules then apply in priority order, and a rule expires only the images it marked that no rule
//     of higher priority identified: an image is expired by at most one rule, and an image that
//     matches the tags of a rule is never expired by a rule of lower priority (so a rule with a high
//     countNumber protects its images from the rules after it);
//   - an image that an index kept in the repository references is kept, and so, in turn, are the
//     images it references (an index of indexes); an index expired releases in the same evaluation
//     the children that the rules expire and no kept index holds.
//
// Digests are unique among images. A day is a calendar day in now's location (pass UTC). Images
// are ordered, for count rules, by push time and then by digest, so that the result does
// not depend on the order of images. The decisions list indexes before the images they reference
// (an expired index is deleted before its children, which could not be deleted while it exists),
// and otherwise oldest push first.
func Evaluate(p *Policy, images []Image, now time.Time) []Decision {
	// Newest first: the order of imageCountMoreThan.
	imgs := slices.Clone(images)
	slices.SortFunc(imgs, func(a, b Image) int {
		if c := b.Pushed.Compare(a.Pushed); c != 0 {
			return c
		}
		return strings.Compare(string(a.Digest), string(b.Digest))
	})

	expiredBy := map[oci.Digest]int{}
	claimed := map[oci.Digest]bool{}
	for _, r := range p.Rules {
		cutoff := now.AddDate(0, 0, -r.CountNumber)
		var selected []oci.Digest
		matched := 0
		for _, img := range imgs {
			if !r.selects(img) {
				continue
			}
			selected = append(selected, img.Digest)
			matched++
			var marked bool
			switch r.CountType {
			case ImageCountMoreThan:
				marked = matched > r.CountNumber
			case SinceImagePushed:
				marked = img.Pushed.Before(cutoff)
			case SinceImagePulled:
				last := img.Pulled
				if last.IsZero() {
					last = img.Pushed
				}
				marked = last.Before(cutoff)
			}
			if marked && !claimed[img.Digest] {
				expiredBy[img.Digest] = r.Priority
			}
		}
		for _, d := range selected {
			claimed[d] = true
		}
	}

	// An image stays while any parent stays, and an image kept that way keeps its own children in
	// turn: walk down from every kept parent, each image once.
	children := map[oci.Digest][]oci.Digest{}
	var keep []oci.Digest
	for _, img := range imgs {
		if _, ok := expiredBy[img.Digest]; !ok {
			continue
		}
		for _, parent := range img.Parents {
			children[parent] = append(children[parent], img.Digest)
			// A parent not among the images is not in expiredBy either: it counts as kept.
			if _, gone := expiredBy[parent]; !gone {
				keep = append(keep, img.Digest)
			}
		}
	}
	for len(keep) > 0 {
		d := keep[len(keep)-1]
		keep = keep[:len(keep)-1]
		if _, ok := expiredBy[d]; ok {
			delete(expiredBy, d)
			keep = append(keep, children[d]...)
		}
	}
	return ordered(imgs, expiredBy)
}

// ordered lists the expired images parents first, otherwise oldest first. An image's depth is
// 0 without expired parents and one more than its deepest expired parent otherwise, so sorting by
// depth puts every index before what it references.
func ordered(newestFirst []Image, expiredBy map[oci.Digest]int) []Decision {
	parents := map[oci.Digest][]oci.Digest{}
	for _, img := range newestFirst {
		parents[img.Digest] = img.Parents
	}
	depth := map[oci.Digest]int{}
	var depthOf func(d oci.Digest, guard int) int
	depthOf = func(d oci.Digest, guard int) int {
		if v, ok := depth[d]; ok {
			return v
		}
		v := 0
		// guard stops a reference cycle, which content addressing rules out but input could hold.
		if guard < len(newestFirst) {
			for _, p := range parents[d] {
				if _, ok := expiredBy[p]; ok && p != d {
					v = max(v, depthOf(p, guard+1)+1)
				}
			}
		}
		depth[d] = v
		return v
	}
	pushed := map[oci.Digest]time.Time{}
	var out []Decision
	for _, img := range newestFirst {
		if r, ok := expiredBy[img.Digest]; ok {
			depthOf(img.Digest, 0)
			pushed[img.Digest] = img.Pushed
			out = append(out, Decision{Digest: img.Digest, RulePriority: r})
		}
	}
	slices.SortFunc(out, func(a, b Decision) int {
		return cmp.Or(cmp.Compare(depth[a.Digest], depth[b.Digest]), pushed[a.Digest].Compare(pushed[b.Digest]),
			strings.Compare(string(a.Digest), string(b.Digest)))
	})
	return out
}

// selects reports whether the rule's selection matches the image's tags. With a list, an image
// matches when every entry of the list matches at least one of its tags (ECR: "all of the tags in
// the tagPatternList value are matched against any of the image's tags").
func (r Rule) selects(img Image) bool {
	switch r.TagStatus {
	case Any:
		return true
	case Untagged:
		return len(img.Tags) == 0
	}
	if len(img.Tags) == 0 {
		return false
	}
	for _, p := range r.TagPrefixes {
		if !slices.ContainsFunc(img.Tags, func(t string) bool { return strings.HasPrefix(t, p) }) {
			return false
		}
	}
	for _, p := range r.TagPatterns {
		if !slices.ContainsFunc(img.Tags, func(t string) bool { return globMatch(p, t) }) {
			return false
		}
	}
	return true
}

// globMatch matches s against a pattern where * stands for any run of characters (none included)
// and every other character for itself, over the whole of s.
func globMatch(pattern, s string) bool {
	parts := strings.Split(pattern, "*")
	if len(parts) == 1 {
		return pattern == s
	}
	first, last := parts[0], parts[len(parts)-1]
	if !strings.HasPrefix(s, first) {
		return false
	}
	s = s[len(first):]
	// Each middle part matched at its earliest place leaves the most room for the rest.
	for _, mid := range parts[1 : len(parts)-1] {
		i := strings.Index(s, mid)
		if i < 0 {
			return false
		}
		s = s[i+len(mid):]
	}
	return strings.HasSuffix(s, last)
}

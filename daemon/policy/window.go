package policy

// ChangedWindow returns where now differs from old, element by element:
// old[start:oldEnd] became now[start:newEnd], and the elements before
// start and from oldEnd (newEnd in now) on are the same in both. A source
// publishes a new slice for every change but keeps the unchanged objects,
// so comparing pointers finds what changed without looking into it.
func ChangedWindow[T comparable](old, now []T) (start, oldEnd, newEnd int) {
	oldEnd, newEnd = len(old), len(now)
	for start < oldEnd && start < newEnd && old[start] == now[start] {
		start++
	}
	for oldEnd > start && newEnd > start && old[oldEnd-1] == now[newEnd-1] {
		oldEnd--
		newEnd--
	}
	return start, oldEnd, newEnd
}

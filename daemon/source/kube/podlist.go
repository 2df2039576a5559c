package kube

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// Listing every pod of a large cluster the usual way holds the whole
// response at once: its bytes (read whole, then copied once more by the
// protobuf envelope) and the full decoded PodList, about 20 KB per pod,
// before the informer's transform strips a single pod. At 10k pods that was
// a heap peak of about 260 MB, measured by BenchmarkAPIServerMemory, and a
// daemon RSS that stayed near it. That is what an API server does without
// WatchList (streaming lists; off by default in Kubernetes v1.33, and
// unavailable without etcd's progress notifications, as on the test bed).
//
// The pod list (restAPI.listPods, client.go) reads the protobuf response as
// a stream instead, decoding one pod at a time and keeping only its
// cachedPod. The request is the same (the
// reflector's resourceVersion "0" list, served from the API server's watch
// cache), and so is the result.

// maxListItemBytes bounds one encoded pod of a list response; etcd refuses
// objects of more than 1.5 MiB by default.
const maxListItemBytes = 64 << 20

// protobufMagic starts every protobuf-encoded Kubernetes object.
var protobufMagic = []byte("k8s\x00")

// decodePodList decodes a PodList response, protobuf (streamed, one pod at
// a time) or JSON (whole), into the cachedPod of each item.
func decodePodList(r io.Reader, convert func(*corev1.Pod) *cachedPod) (*cachedPodList, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	magic, err := br.Peek(len(protobufMagic))
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read response: %w", err)
	}
	if !bytes.Equal(magic, protobufMagic) {
		return decodeWholePodList(br, convert)
	}
	if _, err := br.Discard(len(protobufMagic)); err != nil {
		return nil, fmt.Errorf("read response: %w", err)
	}
	d := &protoStream{r: br, remaining: -1}
	var list *cachedPodList
	var typeMeta runtime.TypeMeta
	var contentEncoding string
	// The envelope is a runtime.Unknown: typeMeta 1, raw 2 (the PodList),
	// contentEncoding 3, contentType 4.
	for {
		field, n, err := d.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("decode envelope: %w", err)
		}
		switch field {
		case 1:
			b, err := d.bytes(n, nil)
			if err == nil {
				err = typeMeta.Unmarshal(b)
			}
			if err != nil {
				return nil, fmt.Errorf("decode envelope type: %w", err)
			}
		case 2:
			// The API server writes the type first: a response that is
			// not a PodList is refused before its items are read.
			if typeMeta.Kind != "PodList" {
				return nil, fmt.Errorf("response holds a %q, not a PodList", typeMeta.Kind)
			}
			if list, err = decodePodListItems(&protoStream{r: br, remaining: n}, convert); err != nil {
				return nil, err
			}
		case 3:
			b, err := d.bytes(n, nil)
			if err != nil {
				return nil, fmt.Errorf("decode envelope: %w", err)
			}
			contentEncoding = string(b)
		default:
			if err := d.skip(n); err != nil {
				return nil, fmt.Errorf("decode envelope: %w", err)
			}
		}
	}
	switch {
	case typeMeta.Kind != "PodList":
		return nil, fmt.Errorf("response holds a %q, not a PodList", typeMeta.Kind)
	case contentEncoding != "":
		return nil, fmt.Errorf("response has content encoding %q, which is not supported", contentEncoding)
	case list == nil:
		list = &cachedPodList{}
	}
	list.Kind, list.APIVersion = typeMeta.Kind, typeMeta.APIVersion
	return list, nil
}

// decodePodListItems decodes the PodList message d holds: metadata 1 and
// items 2, each item decoded, converted and dropped before the next.
func decodePodListItems(d *protoStream, convert func(*corev1.Pod) *cachedPod) (*cachedPodList, error) {
	list := &cachedPodList{Items: []*cachedPod{}}
	var buf []byte
	for {
		field, n, err := d.next()
		if errors.Is(err, io.EOF) {
			return list, nil
		}
		if err != nil {
			return nil, fmt.Errorf("decode pod list: %w", err)
		}
		switch field {
		case 1:
			b, err := d.bytes(n, nil)
			if err == nil {
				err = list.ListMeta.Unmarshal(b)
			}
			if err != nil {
				return nil, fmt.Errorf("decode pod list metadata: %w", err)
			}
		case 2:
			if buf, err = d.bytes(n, buf); err != nil {
				return nil, fmt.Errorf("decode pod %d of the list: %w", len(list.Items), err)
			}
			pod := &corev1.Pod{}
			if err := pod.Unmarshal(buf); err != nil {
				return nil, fmt.Errorf("decode pod %d of the list: %w", len(list.Items), err)
			}
			list.Items = append(list.Items, convert(pod))
		default:
			if err := d.skip(n); err != nil {
				return nil, fmt.Errorf("decode pod list: %w", err)
			}
		}
	}
}

// decodeWholePodList decodes a response that is not protobuf (JSON) whole.
func decodeWholePodList(r io.Reader, convert func(*corev1.Pod) *cachedPod) (*cachedPodList, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("read response: %w", err)
	}
	obj, err := runtime.Decode(clientCodecs.UniversalDeserializer(), data)
	if err != nil {
		return nil, fmt.Errorf("decode response: %w", err)
	}
	pods, ok := obj.(*corev1.PodList)
	if !ok {
		return nil, fmt.Errorf("response holds a %T, not a PodList", obj)
	}
	out := &cachedPodList{TypeMeta: pods.TypeMeta, ListMeta: pods.ListMeta, Items: make([]*cachedPod, 0, len(pods.Items))}
	for i := range pods.Items {
		out.Items = append(out.Items, convert(&pods.Items[i]))
	}
	return out, nil
}

// protoStream reads the length-delimited fields of one protobuf message
// from r: remaining bytes of it, or -1 for a message that runs to EOF.
type protoStream struct {
	r         *bufio.Reader
	remaining int64
}

// next reads the next field's number and length. It returns io.EOF at the
// end of the message, and an error for a field that is not
// length-delimited (the messages read here have no other kind) or that
// runs past the message's end.
func (d *protoStream) next() (field uint64, n int64, err error) {
	if d.remaining == 0 {
		return 0, 0, io.EOF
	}
	tag, err := d.varint()
	if err != nil {
		if errors.Is(err, io.EOF) && d.remaining < 0 {
			return 0, 0, io.EOF
		}
		return 0, 0, unexpectedEOF(err)
	}
	if wire := tag & 7; wire != 2 {
		return 0, 0, fmt.Errorf("field %d has wire type %d, want 2 (length-delimited)", tag>>3, wire)
	}
	length, err := d.varint()
	if err != nil {
		return 0, 0, unexpectedEOF(err)
	}
	if length > maxListItemBytes || (d.remaining >= 0 && int64(length) > d.remaining) {
		return 0, 0, fmt.Errorf("field %d of %d bytes is larger than its message or the %d byte limit", tag>>3, length, maxListItemBytes)
	}
	return tag >> 3, int64(length), nil
}

func (d *protoStream) varint() (uint64, error) {
	var v uint64
	for shift := 0; shift < 64; shift += 7 {
		b, err := d.r.ReadByte()
		if err != nil {
			if shift > 0 {
				return 0, unexpectedEOF(err)
			}
			return 0, err
		}
		d.consumed(1)
		v |= uint64(b&0x7f) << shift
		if b < 0x80 {
			return v, nil
		}
	}
	return 0, errors.New("varint overflows 64 bits")
}

// bytes reads n bytes into buf (grown as needed) and returns them.
func (d *protoStream) bytes(n int64, buf []byte) ([]byte, error) {
	buf = buf[:0]
	if int64(cap(buf)) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(d.r, buf); err != nil {
		return nil, unexpectedEOF(err)
	}
	d.consumed(n)
	return buf, nil
}

func (d *protoStream) skip(n int64) error {
	if _, err := d.r.Discard(int(n)); err != nil {
		return unexpectedEOF(err)
	}
	d.consumed(n)
	return nil
}

func (d *protoStream) consumed(n int64) {
	if d.remaining >= 0 {
		d.remaining -= n
	}
}

func unexpectedEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

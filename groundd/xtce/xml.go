package xtce

import (
	"bufio"
	"encoding/xml"
	"io"
	"strings"
)

// node is an XML element: the document is built as a tree and written in
// one pass, so that element order (which the XTCE schema fixes) reads in
// the code as it appears in the file.
type node struct {
	name     string
	attrs    [][2]string
	text     string
	children []*node
}

func el(name string, attrs ...string) *node {
	n := &node{name: name}
	for i := 0; i+1 < len(attrs); i += 2 {
		if attrs[i+1] != "" {
			n.attrs = append(n.attrs, [2]string{attrs[i], attrs[i+1]})
		}
	}
	return n
}

// add appends children (nil ones are skipped) and returns n.
func (n *node) add(cs ...*node) *node {
	for _, c := range cs {
		if c != nil {
			n.children = append(n.children, c)
		}
	}
	return n
}

func (n *node) withText(s string) *node { n.text = s; return n }

func (n *node) write(w *bufio.Writer, depth int) {
	indent := strings.Repeat("  ", depth)
	w.WriteString(indent + "<" + n.name)
	for _, a := range n.attrs {
		w.WriteString(" " + a[0] + `="`)
		xml.EscapeText(w, []byte(a[1]))
		w.WriteString(`"`)
	}
	switch {
	case len(n.children) == 0 && n.text == "":
		w.WriteString("/>\n")
	case len(n.children) == 0:
		w.WriteString(">")
		xml.EscapeText(w, []byte(n.text))
		w.WriteString("</" + n.name + ">\n")
	default:
		w.WriteString(">\n")
		for _, c := range n.children {
			c.write(w, depth+1)
		}
		w.WriteString(indent + "</" + n.name + ">\n")
	}
}

func writeDoc(w io.Writer, root *node) error {
	bw := bufio.NewWriter(w)
	bw.WriteString(xml.Header)
	root.write(bw, 0)
	return bw.Flush()
}

// Renders an Ollama Modelfile TEMPLATE with Go's own text/template, given the messages of a chat
// request as JSON on stdin. The data mirror Ollama's: .System joins the system messages, .Messages
// holds them all (system ones included). The Modelfile's SYSTEM default is the caller's first message.
package main

import (
	"encoding/json"
	"os"
	"strings"
	"text/template"
)

type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

func main() {
	tpl, _ := os.ReadFile(os.Args[1])
	var msgs []Message
	json.NewDecoder(os.Stdin).Decode(&msgs)
	var system []string
	for _, m := range msgs {
		if m.Role == "system" {
			system = append(system, m.Content)
		}
	}
	t := template.Must(template.New("").Parse(string(tpl)))
	if err := t.Execute(os.Stdout, map[string]any{"System": strings.Join(system, "\n\n"), "Messages": msgs}); err != nil {
		panic(err)
	}
}

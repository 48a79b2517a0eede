//! OpenAI chat/completions ⇄ Cohere v2 Chat API (`POST /v2/chat`) and v2 Embed.

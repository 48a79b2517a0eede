//! OpenAI chat/completions ⇄ Google Gemini API (`generateContent`, `streamGenerateContent?alt=sse`, `batchEmbedContents`).

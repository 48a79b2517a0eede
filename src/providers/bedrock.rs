//! OpenAI chat/completions ⇄ Amazon Bedrock Converse / ConverseStream, with SigV4 request signing and AWS event-stream decoding.

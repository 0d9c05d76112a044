"""Answers as they are said: sentences cut from text as it is written (`sentences`), and the
text a TTS engine should be given (`speakable`), without markdown, code or spelled-out URLs,
and within the realm's cap for spoken answers."""

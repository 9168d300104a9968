/* The demo page files, embedded so that the daemon serves them with no files installed. */
	.section .rodata
	.global page_index_html
	.global page_index_html_end
page_index_html:
	.incbin "daemon/page/index.html"
page_index_html_end:
	.global page_client_js
	.global page_client_js_end
page_client_js:
	.incbin "daemon/page/incsearch.js"
page_client_js_end:
	.section .note.GNU-stack,"",@progbits
